"""The door into pacing: the one question a sender asks per attempt and the one report it gives back.

``pacer.admit(mailbox, recipients) -> Admission``: may this mailbox send one message to ``recipients`` people
now, and if not, when and why (or never: over a limit)? An admitted attempt reports once, with
``admission.report()``, when Graph has answered or whatever ended the attempt before Graph; from then on the
send counts in the mailbox's message window for a window. The rows, views, shares and leases behind the answer
are the package's own business (shared/pacing/budget.py, budget_view.py, budget_row.py): nothing outside
shared/pacing imports them, bar the composition root that builds the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.base import errors
from shared.base.formats import mailbox_key

CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"  # personal Microsoft accounts (Outlook.com)

__all__ = ["CONSUMER_TENANT_ID", "Admission", "Mailbox", "Pacer"]


@dataclass(frozen=True)
class Mailbox:
    """What a budget belongs to: the mailbox Graph is called for (never a connection: several can share one).
    ``key`` and ``consumer`` are worked out once, when the sender names the mailbox."""

    tenant_id: str
    object_id: str  # or the lower-cased address of a `from` mailbox sent to via /users/{from}
    address: str = field(default="", compare=False)  # its SMTP address: its domain is the tenant's (tenant.py)
    key: str = field(init=False, compare=False, repr=False)
    consumer: bool = field(init=False, compare=False, repr=False)  # a personal Outlook.com mailbox

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", mailbox_key(self.tenant_id, self.object_id))
        object.__setattr__(self, "consumer", self.tenant_id.lower() == CONSUMER_TENANT_ID)


@dataclass
class Admission:
    """The answer: ``admitted`` (a slot is held until :meth:`report`), or a ``delay`` in seconds with its
    ``reason`` (concurrency | message_rate | share_pending | daily_limit | contended | upload_rate |
    tenant_external_limit), or an ``error`` (refused for good: over the per-message or the daily recipient limit)."""

    mailbox: str
    delay: float = 0.0
    reason: str = ""
    error: errors.MailbridgeError | None = None
    # What the budget does with the report (frees the slot, stamps the send); None when nothing is held.
    give_back: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def admitted(self) -> bool:
        return self.error is None and self.delay <= 0

    def report(self) -> None:
        """The attempt is over for the mailbox's budget: Graph answered (whatever it said), or the attempt ended
        before reaching Graph. Call it once per admitted attempt, on every path; a second call does nothing.
        The send counts in the message window until a window after now either way (Exchange may have counted
        a send that failed, and an early exit is rare enough not to be worth telling apart)."""
        give_back, self.give_back = self.give_back, None
        if give_back is not None:
            give_back()


class Pacer(Protocol):
    """What the sender needs of pacing (``Services.budget`` is one: shared/pacing/budget.py)."""

    def admit(self, mailbox: Mailbox, recipients: int | Sequence[str], upload_bytes: int = 0) -> Admission:
        """May ``mailbox`` send one message to ``recipients`` people now (a count, or their addresses: the tenant's
        external-recipient budget counts those outside its domains), uploading ``upload_bytes`` of request
        bodies (Graph's 150 MB / 5 min upload limit; 0: a small message the upload budget does not count)? If
        not, when, and why?"""
        ...
