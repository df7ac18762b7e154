"""Signed webhooks: every outcome event also POSTed to WEBHOOK_URL, in the Standard Webhooks format, from a queue
of its own (WEBHOOK_QUEUE), beside the events queue. docs/events.md describes the contract for receivers.

- The body is the CloudEvent exactly as the events queue carries it (JSON). Headers: ``webhook-id`` (the
  CloudEvent ``id``: the same on every attempt and every republication of the event, so a receiver dedupes on it),
  ``webhook-timestamp`` (this attempt's time, in seconds: a receiver refuses one outside its replay window, 5
  minutes in the standardwebhooks libraries) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of
  ``id.timestamp.body`` under each WEBHOOK_SECRET, space-separated: two during a rotation).
- At least once: an event is put on WEBHOOK_QUEUE (by the queue function's output binding, or written at once for
  events published outside it); ``deliver_webhook`` (blueprints/webhooks.py) makes one attempt per queue message.
  A failed attempt (no 2xx, a timeout, a refused connection) puts the next one back on the queue, invisible for
  an exponentially growing delay (RetryPolicy), or for as long as a 429's or 503's ``Retry-After`` asks (at least
  1 s, at most MAX_RETRY_AFTER_S); after ``max_attempts`` (or at once for a target refused as private, or a
  ``410 Gone``: the receiver says the endpoint is no more) the delivery is recorded on WEBHOOK_QUEUE-poison with its
  reason and an error line is logged. Mail is
  never held up: the sender only enqueues. If the function itself fails (Storage down), the host retries the
  message and, after host.json's maxDequeueCount, moves it to the same poison queue.
- The secrets are never logged, nor the URL's path or query (it may carry a receiver's token): the host only.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from shared.base.settings import VERSION
from shared.base.webhook_http import AttemptLimits, AttemptResult, TargetRefused, post

if TYPE_CHECKING:
    from shared.base.settings import Settings
    from shared.base.storage import StorageClients

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"  # CloudEvents' structured mode over HTTP
MAX_VISIBILITY_S = 7 * 86_400  # Storage queues: a message can be hidden for at most 7 days
MAX_RETRY_AFTER_S = 86_400  # a receiver's Retry-After is honoured up to a day (attempts stay bounded by the policy)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and the delays between them: ``first_delay_s`` doubled after each failed attempt, capped at
    ``max_delay_s``, minus up to 20 % jitter (so receivers coming back are not hit by every retry at once).
    The defaults: 10 attempts over about 4.5 hours (30 s, 1, 2, 4, 8, 16, 32, 64 and 128 minutes)."""

    max_attempts: int = 10
    first_delay_s: float = 30.0
    max_delay_s: float = 4 * 3600.0

    def delay_after(self, attempt: int) -> int:
        """Seconds to wait before attempt ``attempt + 1``."""
        base = min(self.max_delay_s, self.first_delay_s * 2 ** (attempt - 1))
        return min(MAX_VISIBILITY_S, round(base * random.uniform(0.8, 1.0)))  # noqa: S311 - jitter, not security


@dataclass(frozen=True)
class Delivery:
    """A queued delivery: the event's id, its body (signed as is) and the number of the next attempt."""

    id: str
    body: str
    attempt: int = 1
    first_queued_at: float = field(default_factory=time.time)

    def to_text(self) -> str:
        return json.dumps(
            {"id": self.id, "attempt": self.attempt, "first_queued_at": self.first_queued_at, "body": self.body},
            separators=(",", ":"),
        )

    @classmethod
    def from_text(cls, text: str) -> Delivery:
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("body"), str):
            raise ValueError("not a webhook delivery")
        attempt = doc.get("attempt", 1)
        if not isinstance(attempt, int) or attempt < 1:
            raise ValueError("not a webhook delivery")
        return cls(doc["id"], doc["body"], attempt, float(doc.get("first_queued_at") or time.time()))


@dataclass(frozen=True)
class Outcome:
    """What one queue message's attempt came to: ``delivered``, ``retry`` (queued again) or ``failed``."""

    result: str
    attempt: int
    detail: str = ""
    delay: int = 0  # with ``retry``: seconds until the next attempt


class WebhookSigner:
    """Standard Webhooks signatures under each of the secrets (two during a rotation)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._hooks = [Webhook(secret) for secret in secrets]

    def headers(self, msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": " ".join(hook.sign(msg_id, timestamp, body) for hook in self._hooks),
        }


class WebhookDispatcher:
    """Queues events for WEBHOOK_URL and makes the attempts. ``policy`` and ``limits`` are replaceable (tests)."""

    def __init__(
        self,
        settings: Settings,
        clients: StorageClients,
        policy: RetryPolicy | None = None,
        limits: AttemptLimits | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.policy = policy or RetryPolicy()
        self.limits = limits or AttemptLimits()
        self.signer = WebhookSigner(settings.webhook_secrets)

    @property
    def enabled(self) -> bool:
        return self.settings.webhooks_enabled

    def deliveries(self, event_texts: list[str]) -> list[str]:
        """The WEBHOOK_QUEUE messages for events (CloudEvents JSON): what the output binding writes."""
        return [Delivery(json.loads(text)["id"], text).to_text() for text in event_texts]

    def enqueue(self, event_text: str) -> None:
        """Queue one event for delivery now (events published outside a queue function's output binding)."""
        (message,) = self.deliveries([event_text])
        self.clients.queue(self.settings.webhook_queue).send_message(message)

    def deliver(self, message_text: str) -> Outcome:
        """One attempt for one WEBHOOK_QUEUE message; on failure the next attempt is queued, or the delivery is
        recorded failed. Raises only when Storage does (the host then retries the message)."""
        try:
            delivery = Delivery.from_text(message_text)
        except ValueError:
            self._record_failed(None, "malformed", message_text)
            return Outcome("failed", 0, "malformed")
        if not self.enabled:
            self._record_failed(delivery, "webhooks_disabled")
            return Outcome("failed", delivery.attempt, "webhooks_disabled")
        host = urlsplit(self.settings.webhook_url).hostname
        now = datetime.now(UTC)  # per attempt: the receiver's replay window counts from here
        headers = {
            **self.signer.headers(delivery.id, now, delivery.body),
            "Content-Type": CONTENT_TYPE,
            "User-Agent": f"Mailbridge-Webhooks/{VERSION}",
        }
        try:
            result = post(
                self.settings.webhook_url,
                delivery.body.encode(),
                headers,
                allow_private=self.settings.webhook_allow_private_targets,
                ca_bundle=self.settings.ca_bundle,
                limits=self.limits,
            )
        except TargetRefused as exc:
            logger.error("Webhook %s to %s refused: %s; not retried", delivery.id, host, exc)
            self._record_failed(delivery, "target_refused")
            return Outcome("failed", delivery.attempt, "target_refused")
        if result.delivered:
            logger.info("Webhook %s delivered to %s (attempt %d)", delivery.id, host, delivery.attempt)
            return Outcome("delivered", delivery.attempt, result.describe())
        return self._after_failure(delivery, result, host)

    def _after_failure(self, delivery: Delivery, result: AttemptResult, host: str | None) -> Outcome:
        if result.gone or delivery.attempt >= self.policy.max_attempts:
            logger.error(
                "Webhook %s to %s failed %d times (last: %s%s); recorded on the poison queue",
                delivery.id,
                host,
                delivery.attempt,
                result.describe(),
                ", the receiver says the endpoint is gone: not retried" if result.gone else "",
            )
            self._record_failed(delivery, result.describe())
            return Outcome("failed", delivery.attempt, result.describe())
        delay = self.policy.delay_after(delivery.attempt)
        if result.retry_after is not None:  # the receiver knows when it can take the next one
            delay = round(min(MAX_RETRY_AFTER_S, max(1.0, result.retry_after)))
        following = Delivery(delivery.id, delivery.body, delivery.attempt + 1, delivery.first_queued_at)
        self.clients.queue(self.settings.webhook_queue).send_message(following.to_text(), visibility_timeout=delay)
        logger.warning(
            "Webhook %s to %s: attempt %d failed (%s); next in %d s",
            delivery.id,
            host,
            delivery.attempt,
            result.describe(),
            delay,
        )
        return Outcome("retry", delivery.attempt, result.describe(), delay)

    def _record_failed(self, delivery: Delivery | None, reason: str, raw: str | None = None) -> None:
        record: dict[str, Any] = {"reason": reason, "failed_at": time.time()}
        if delivery is not None:
            record |= {"id": delivery.id, "attempts": delivery.attempt, "body": delivery.body}
        else:
            record["message"] = (raw or "")[:4096]
            logger.error("Webhook queue message is not a delivery; recorded on the poison queue")
        self.clients.queue(self.settings.webhook_poison_queue).send_message(json.dumps(record, separators=(",", ":")))
