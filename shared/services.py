"""The composition root: the process-wide object graph, built once from the settings and shared by every
trigger. The only module of shared/ that knows every package (base, tokens, connect, pacing, send); the
others say in a Protocol what they use of it (docs/architecture.md)."""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import requests

from shared.base.identity import MsalFactory, http_session
from shared.base.settings import Settings, get_settings
from shared.base.storage import StorageClients
from shared.tokens.app_credential import AppCredentialHealth, AppCredentialProbe
from shared.tokens.cache_store import TokenCacheStore
from shared.tokens.locks import ConnectionLocks
from shared.tokens.secrets import TokenCacheVault, TokenKey
from shared.tokens.store import ConnectionStore, FlowStore
from shared.tokens.tokens import TokenService

if TYPE_CHECKING:
    from shared.base.events import EventPublisher
    from shared.base.webhooks import WebhookDispatcher
    from shared.pacing.budget import MailboxBudget
    from shared.send.attachments import AttachmentStore
    from shared.send.deliveries import DeliveryStore
    from shared.send.graph import GraphClient
    from shared.send.intake import MessageIntake
    from shared.send.mailbox_state import MailboxStates
    from shared.send.sender import Sender


@dataclass
class Services:
    settings: Settings
    # Every "now" the app reasons with (refresh due dates, token expiry); tests substitute the emulator's clock.
    clock: Callable[[], float] = time.time

    @cached_property
    def http(self) -> requests.Session:
        return http_session(self.settings)

    @cached_property
    def storage(self) -> StorageClients:
        return StorageClients(self.settings)

    @cached_property
    def connections(self) -> ConnectionStore:
        return ConnectionStore(self.storage)

    @cached_property
    def flows(self) -> FlowStore:
        return FlowStore(self.storage)

    @cached_property
    def msal(self) -> MsalFactory:
        return MsalFactory(self.settings, self.http)

    @cached_property
    def token_key(self) -> TokenKey:
        """The vault's key wrapping each connection's data key (KEY_VAULT_KEY_NAME)."""
        return TokenKey(self.settings)

    @cached_property
    def legacy_vault(self) -> TokenCacheVault:
        """Plain token caches as Key Vault secrets (before issue 26): read once, upgraded and deleted."""
        return TokenCacheVault(self.settings)

    @cached_property
    def token_caches(self) -> TokenCacheStore:
        """Sealed token caches in Table storage, one row per connection (shared/tokens/cache_store.py)."""
        return TokenCacheStore(
            self.storage, self.token_key, self.legacy_vault, max_keys=self.settings.token_key_cache_size
        )

    @cached_property
    def locks(self) -> ConnectionLocks:
        return ConnectionLocks(self.storage)

    @cached_property
    def app_credential(self) -> AppCredentialHealth:
        return AppCredentialHealth(self.settings, self.storage)

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(
            self.settings,
            self.msal,
            self.token_caches,
            self.connections,
            self.locks,
            clock=self.clock,
            credential_health=self.app_credential,
            credential_probe=AppCredentialProbe(self.settings, self.msal),
        )

    # --- send pipeline (issue 5); imported here so the connect path does not load it -------------------
    @cached_property
    def graph(self) -> GraphClient:
        from shared.send.graph import GraphClient

        return GraphClient(self.settings, self.http)

    @cached_property
    def deliveries(self) -> DeliveryStore:
        from shared.send.deliveries import DeliveryStore

        return DeliveryStore(self.storage)

    @cached_property
    def waiting_messages(self) -> MessageIntake:
        """What a disconnect asks of the send path: finish the connection's waiting messages."""
        from shared.send.intake import MessageIntake

        return MessageIntake(self)

    @cached_property
    def events(self) -> EventPublisher:
        from shared.base.events import EventPublisher

        return EventPublisher(self.settings, self.storage, self.webhooks if self.settings.webhooks_enabled else None)

    @cached_property
    def webhooks(self) -> WebhookDispatcher:
        """Signed webhooks to WEBHOOK_URL from WEBHOOK_QUEUE (shared/base/webhooks.py)."""
        from shared.base.webhooks import WebhookDispatcher

        return WebhookDispatcher(self.settings, self.storage)

    @cached_property
    def attachments(self) -> AttachmentStore:
        from shared.send.attachments import AttachmentStore

        return AttachmentStore(self.storage, self.settings.attachments_container)

    @cached_property
    def budget(self) -> MailboxBudget:
        """Per-mailbox sending budgets shared by every instance (tests scale them with the MAILBOX_* settings)."""
        from dataclasses import replace

        from shared.pacing.budget import Limits, MailboxBudget

        s = self.settings
        work = Limits(
            messages_per_window=s.mailbox_messages_per_minute,
            message_window_s=s.mailbox_message_window_seconds,
            recipients_per_window=s.mailbox_recipients_per_day,
            recipient_window_s=s.mailbox_recipient_window_seconds,
            recipients_per_message=s.mailbox_recipients_per_message,
            max_concurrency=s.mailbox_concurrency,
            upload_bytes_per_window=s.mailbox_upload_bytes_per_window,
            upload_window_s=s.mailbox_upload_window_seconds,
        )
        # Personal (Outlook.com) mailboxes: the same windows and concurrency, their own recipient limits.
        consumer = replace(
            work,
            recipients_per_window=s.consumer_recipients_per_day,
            recipients_per_message=s.consumer_recipients_per_message,
        )
        budget = MailboxBudget(
            self.storage,
            work,
            consumer,
            lease_s=s.mailbox_budget_lease_seconds,
            max_wait_s=s.mailbox_max_wait_seconds,
            give_back_idle=True,
            tenant_limits=s.tenant_external_recipient_limits,
        )
        # A graceful stop gives the shares back, so a restart need not wait for their leases and a window.
        ref = weakref.ref(budget)
        atexit.register(lambda: (alive := ref()) is not None and alive.close())
        return budget

    @cached_property
    def sender(self) -> Sender:
        from shared.send.sender import Sender

        return Sender(
            self.settings,
            self.storage,
            self.connections,
            self.tokens,
            self.graph,
            self.budget,
            self.deliveries,
            self.events,
            self.attachments,
            self.mailbox_states,
        )

    @cached_property
    def mailbox_states(self) -> MailboxStates:
        from shared.send.mailbox_state import MailboxStates

        return MailboxStates(self.settings, self.connections, self.events)


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    """The shared Services, built on first use (settings errors surface here, naming the setting)."""
    global _services
    with _lock:
        if _services is None:
            _services = Services(get_settings())
        return _services


def reset_services() -> None:
    """Drop the shared Services (tests change settings between runs)."""
    global _services
    from shared.base.settings import reset_settings_cache

    with _lock:
        _services = None
        reset_settings_cache()
