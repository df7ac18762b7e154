"""Every app setting of Mailbridge, read once from the environment into one frozen dataclass.

No other module reads ``os.environ``. A missing or malformed setting raises ``SettingsError``
naming it, at start (``function_app.py`` loads the settings when the host indexes the app).
``local.settings.sample.json`` lists every setting with a local default; docs/settings.md explains them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from shared.base.clouds import CLOUDS, Cloud
from shared.base.errors import SettingsError
from shared.base.tenant_limits import TenantExternalLimit, parse_tenant_limits
from shared.base.webhook_config import parse_webhook_secrets, parse_webhook_url

VERSION = "0.1.0"

# Fixed resource names (infra creates them; not settings because nothing gains from renaming them).
CONNECTIONS_TABLE = "connections"
AUTHFLOWS_TABLE = "authflows"
DELIVERIES_TABLE = "deliveries"
# Sealed MSAL token caches, one row per connection (shared/tokens/cache_store.py).
TOKEN_CACHES_TABLE = "tokencaches"  # noqa: S105 - a table name
# Messages waiting longer than a short bound, out of the trigger queue until due (shared/send/parking.py).
PARKED_TABLE = "parkedmessages"

# A tenant id, or a domain name of at most 253 characters (RFC 1035 2.3.4) and labels of at most 63.
_TENANT_RE = re.compile(
    r"^(organizations|common|consumers|[0-9a-fA-F-]{36}|(?=[A-Za-z0-9.-]{4,253}\Z)(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63})\Z"
)
_QUEUE_RE = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
HOST_QUEUE_PREFIX = "azure-webjobs-"  # the Functions host's own queues (blob trigger receipts, ...)
# Bounds of the keep-alive settings. A run must end (its refreshes in flight included) inside host.json's
# functionTimeout of 10 minutes; each refresh in flight is a thread with its own HTTP connections.
KEEPALIVE_MAX_RUN_SECONDS = 540
KEEPALIVE_MAX_CONCURRENCY = 64
# Data keys of sealed token caches one instance keeps unwrapped (TOKEN_KEY_CACHE_SIZE; about 0.6 KB each).
TOKEN_KEY_CACHE_MAX = 1_000_000
# Signed webhooks (shared/base/webhooks.py): the queue they are delivered from, and the message encodings of events.
EVENT_ENCODINGS = ("none", "base64")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class StorageSettings:
    """How to reach the storage account: a connection string (Azurite, local) or identity-based URIs."""

    connection_string: str | None = field(default=None, repr=False)
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    blob_service_uri: str | None = None

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


@dataclass(frozen=True)
class Settings:
    """The whole configuration. Secrets are excluded from ``repr`` so a logged settings object leaks nothing."""

    entra_client_id: str
    entra_client_credential: str  # "secret" (local) | "managed_identity" (federated credential, Azure)
    entra_client_secret: str | None = field(repr=False)
    entra_tenant: str
    cloud: Cloud
    authority_host: str
    graph_endpoint: str
    key_vault_url: str
    key_vault_auth: str  # "managed_identity" | "app" | "default"
    key_vault_key_name: str  # the RSA key wrapping each connection's data key (issue 26)
    managed_identity_client_id: str | None
    storage: StorageSettings
    outbound_queue: str
    events_queue: str
    attachments_container: str
    public_base_url: str
    allowed_return_origins: tuple[str, ...]
    refresh_after_days: int
    refresh_schedule: str
    enable_shared_mailboxes: bool
    enable_mail_readwrite: bool
    max_message_bytes: int
    ticket_signing_key: bytes = field(repr=False)
    ca_bundle: str | None
    enable_sample_ui: bool
    table_prefix: str = ""
    # Per-mailbox pacing of sends (Outlook/Exchange limits; lower them for Outlook.com: ~300 mails/day).
    mailbox_concurrency: int = 4
    mailbox_messages_per_minute: int = 30
    mailbox_recipients_per_day: int = 10_000
    # Shared per-mailbox budgets (shared/pacing/budget.py, docs/sending.md): windows, consumer limits, lease, holds.
    mailbox_message_window_seconds: float = 60.0
    mailbox_recipient_window_seconds: float = 86_400.0
    mailbox_recipients_per_message: int = 500
    consumer_recipients_per_day: int = 300
    consumer_recipients_per_message: int = 100
    mailbox_budget_lease_seconds: float = 60.0
    mailbox_max_wait_seconds: float = 5.0
    # Graph's upload limit per app + mailbox (shared/pacing/uploads.py): bytes of request bodies per window.
    mailbox_upload_bytes_per_window: int = 150_000_000
    mailbox_upload_window_seconds: float = 300.0
    daily_limit_max_hold_seconds: int = 3 * 86_400
    # Opt-in per-tenant budgets of external recipients (TERRL; shared/pacing/tenant.py). Empty: off.
    tenant_external_recipient_limits: tuple[TenantExternalLimit, ...] = ()
    send_as_endpoint: str = "me"  # "me": /me/sendMail with from; "users": /users/{from}/sendMail
    # Queues besides EVENTS_QUEUE a message's callback.queue may name (CALLBACK_QUEUES; default none).
    callback_queues: tuple[str, ...] = ()
    # The keep-alive sweep (docs/keepalive.md, docs/capacity.md): refreshes in flight, and how long one run takes new
    # work (below host.json's 10-minute functionTimeout). Runs per day come from REFRESH_SCHEDULE.
    keepalive_concurrency: int = 4
    keepalive_run_seconds: int = 480
    # Data keys of token caches an instance keeps unwrapped, most recently used (TOKEN_KEY_CACHE_SIZE): each miss is a
    # Key Vault unwrap, the operation that binds first at 1M connections (docs/capacity.md). ~0.6 KB each: 60 MB.
    token_key_cache_size: int = 100_000
    # The app registration's home tenant (ENTRA_HOME_TENANT): where the app's own credential is checked before a
    # refused refresh is blamed on it (shared/tokens/app_credential.py AppCredentialProbe). "" = not known.
    entra_home_tenant: str = ""
    # Signed webhooks (docs/events.md): WEBHOOK_URL ("" = off), its whsec_ secrets (two during a rotation), whether
    # private, loopback and link-local targets (and http) are allowed (local development only), the delivery queue.
    webhook_url: str = ""
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    webhook_allow_private_targets: bool = False
    webhook_queue: str = "webhook-deliveries"
    # How events are written to EVENTS_QUEUE and callback queues (EVENTS_MESSAGE_ENCODING): plain text or base64.
    events_message_encoding: str = "none"
    version: str = VERSION

    @property
    def graph_scopes(self) -> list[str]:
        """Delegated Graph scopes to request (MSAL adds openid, profile and offline_access itself).

        Least privilege: Mail.Send only, unless shared mailboxes or large-attachment / draft mode are on.
        Outside the public cloud the scopes are qualified with the cloud's Graph resource.
        """
        names = ["Mail.Send"]
        if self.enable_shared_mailboxes:
            names.append("Mail.Send.Shared")
        if self.enable_mail_readwrite:
            names.append("Mail.ReadWrite")
        if self.cloud.name == "public":
            return names
        return [f"{self.cloud.graph_resource}/{n}" for n in names]

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.entra_tenant}"

    @property
    def outbound_poison_queue(self) -> str:
        return f"{self.outbound_queue}-poison"

    @property
    def webhooks_enabled(self) -> bool:
        return bool(self.webhook_url)

    @property
    def webhook_poison_queue(self) -> str:
        return f"{self.webhook_queue}-poison"

    @property
    def allowed_callback_queues(self) -> frozenset[str]:
        """What a message's ``callback.queue`` may name: the operator's CALLBACK_QUEUES and EVENTS_QUEUE."""
        return frozenset((*self.callback_queues, self.events_queue))

    @property
    def tls_verify(self) -> str | bool:
        """What to pass as ``verify=`` to HTTP clients: the CA bundle when one is set, else system trust."""
        return self.ca_bundle or True


def _get(env: Mapping[str, str], name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        if required:
            raise SettingsError(name, "is required but not set")
        return default
    return value.strip()


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise SettingsError(name, f"must be true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(name, f"must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(name, f"must be between {lo} and {hi}, got {value}")
    return value


def _https_url(name: str, value: str, *, allow_http_loopback: bool = False) -> str:
    parts = urlsplit(value)
    loopback = parts.hostname in {"127.0.0.1", "localhost", "::1"}
    if parts.scheme == "https" or (allow_http_loopback and parts.scheme == "http" and loopback):
        if not parts.netloc:
            raise SettingsError(name, f"is not a URL: {value!r}")
        return value.rstrip("/")
    raise SettingsError(name, f"must be an https URL, got {value!r}")


def _origin(name: str, value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in {"https", "http"} or not parts.netloc or parts.path not in {"", "/"}:
        raise SettingsError(name, f"entries must be origins like https://app.example.com, got {value!r}")
    if parts.scheme == "http" and parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise SettingsError(name, f"http origins are allowed only for localhost, got {value!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


def _ncrontab(name: str, value: str) -> str:
    fields = value.split()
    if len(fields) != 6:
        raise SettingsError(name, f"must be six-field NCRONTAB (sec min hour day month dow), got {value!r}")
    return " ".join(fields)


def _storage(env: Mapping[str, str]) -> StorageSettings:
    conn = _get(env, "AzureWebJobsStorage")
    if conn:
        if "=" not in conn:
            raise SettingsError("AzureWebJobsStorage", "must be a storage connection string")
        return StorageSettings(connection_string=conn)
    account = _get(env, "AzureWebJobsStorage__accountName")
    uris = {}
    for kind in ("queue", "table", "blob"):
        uri = _get(env, f"AzureWebJobsStorage__{kind}ServiceUri")
        if uri is None and account:
            suffix = "core.windows.net"
            uri = f"https://{account}.{kind}.{suffix}"
        if uri is None:
            raise SettingsError(
                "AzureWebJobsStorage",
                f"is required (a connection string, or AzureWebJobsStorage__{kind}ServiceUri for identity access)",
            )
        uris[kind] = _https_url(f"AzureWebJobsStorage__{kind}ServiceUri", uri, allow_http_loopback=True)
    return StorageSettings(
        queue_service_uri=uris["queue"], table_service_uri=uris["table"], blob_service_uri=uris["blob"]
    )


def _ticket_key(env: Mapping[str, str]) -> bytes:
    raw = _get(env, "TICKET_SIGNING_KEY", required=True)
    assert raw is not None
    if raw.startswith("@Microsoft.KeyVault("):
        # The Functions host resolves Key Vault references before the worker starts; seeing one means it failed.
        raise SettingsError("TICKET_SIGNING_KEY", "is an unresolved Key Vault reference; check the app's vault access")
    key = raw.encode()
    if len(key) < 32:
        raise SettingsError("TICKET_SIGNING_KEY", "must be at least 32 characters of random text")
    return key


def _table_prefix(env: Mapping[str, str]) -> str:
    prefix = _get(env, "TABLE_PREFIX", "") or ""
    if prefix and not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,19}", prefix):
        raise SettingsError("TABLE_PREFIX", "must be 1-20 letters/digits starting with a letter")
    return prefix


def _send_as_endpoint(env: Mapping[str, str]) -> str:
    value = (_get(env, "SEND_AS_ENDPOINT", "me") or "me").lower()
    if value not in {"me", "users"}:
        raise SettingsError("SEND_AS_ENDPOINT", f"must be 'me' or 'users', got {value!r}")
    return value


def _callback_queues(env: Mapping[str, str], outbound: str) -> tuple[str, ...]:
    """CALLBACK_QUEUES: queue names separated by commas or spaces. Never the outbound queue, its poison queue or
    the Functions host's own ``azure-webjobs-*`` queues: an event written there would feed mail back into the
    sender or corrupt the host's bookkeeping."""
    raw = _get(env, "CALLBACK_QUEUES", "") or ""
    names = tuple(dict.fromkeys(n for n in re.split(r"[\s,]+", raw) if n))
    for name in names:
        if not _QUEUE_RE.match(name):
            raise SettingsError("CALLBACK_QUEUES", f"lists an invalid queue name: {name!r}")
        if name in {outbound, f"{outbound}-poison"} or name.startswith(HOST_QUEUE_PREFIX):
            raise SettingsError("CALLBACK_QUEUES", f"must not list the app's own queue {name!r}")
    return names


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = (_get(env, name, choices[0]) or choices[0]).lower()
    if value not in choices:
        raise SettingsError(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


_MULTI_TENANT = frozenset({"organizations", "common", "consumers"})


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (default: the process environment); raise SettingsError naming the culprit."""
    env = os.environ if env is None else env

    cloud_name = (_get(env, "AZURE_CLOUD", "public") or "public").lower()
    if cloud_name not in CLOUDS:
        raise SettingsError("AZURE_CLOUD", f"must be one of {', '.join(CLOUDS)}, got {cloud_name!r}")
    cloud = CLOUDS[cloud_name]

    tenant = _get(env, "ENTRA_TENANT", "organizations") or "organizations"
    if not _TENANT_RE.match(tenant):
        raise SettingsError(
            "ENTRA_TENANT", f"must be organizations, common, consumers, a tenant id or a domain, got {tenant!r}"
        )

    credential = (_get(env, "ENTRA_CLIENT_CREDENTIAL") or ("secret" if env.get("ENTRA_CLIENT_SECRET") else "")).lower()
    if credential not in {"secret", "managed_identity"}:
        raise SettingsError(
            "ENTRA_CLIENT_CREDENTIAL", "must be 'secret' (with ENTRA_CLIENT_SECRET) or 'managed_identity'"
        )
    secret = _get(env, "ENTRA_CLIENT_SECRET", required=credential == "secret")
    mi_client_id = _get(env, "MANAGED_IDENTITY_CLIENT_ID")
    if credential == "managed_identity" and not mi_client_id:
        raise SettingsError("MANAGED_IDENTITY_CLIENT_ID", "is required when ENTRA_CLIENT_CREDENTIAL=managed_identity")

    kv_auth = (_get(env, "KEY_VAULT_AUTH", "default") or "default").lower()
    if kv_auth not in {"managed_identity", "app", "default"}:
        raise SettingsError("KEY_VAULT_AUTH", "must be managed_identity, app or default")

    key_name = _get(env, "KEY_VAULT_KEY_NAME", "mailbridge-tokens") or "mailbridge-tokens"
    if not re.fullmatch(r"[0-9a-zA-Z-]{1,127}", key_name):
        raise SettingsError("KEY_VAULT_KEY_NAME", "must be 1-127 letters, digits or dashes (a Key Vault key name)")

    ca_bundle = _get(env, "MAILBRIDGE_CA_BUNDLE")
    if ca_bundle and not Path(ca_bundle).is_file():
        raise SettingsError("MAILBRIDGE_CA_BUNDLE", f"names a file that does not exist: {ca_bundle}")

    origins_raw = _get(env, "ALLOWED_RETURN_ORIGINS", required=True) or ""
    origins = tuple(dict.fromkeys(_origin("ALLOWED_RETURN_ORIGINS", o) for o in origins_raw.split(",") if o.strip()))
    if not origins:
        raise SettingsError("ALLOWED_RETURN_ORIGINS", "must list at least one origin")

    outbound = _get(env, "OUTBOUND_QUEUE", "outbound-mail") or "outbound-mail"
    events = _get(env, "EVENTS_QUEUE", "mail-events") or "mail-events"
    webhook_queue = _get(env, "WEBHOOK_QUEUE", "webhook-deliveries") or "webhook-deliveries"
    for name, value in (("OUTBOUND_QUEUE", outbound), ("EVENTS_QUEUE", events), ("WEBHOOK_QUEUE", webhook_queue)):
        if not _QUEUE_RE.match(value):
            raise SettingsError(name, f"is not a valid queue name: {value!r}")
    if webhook_queue in {outbound, events, f"{outbound}-poison"}:
        raise SettingsError("WEBHOOK_QUEUE", "must be a queue of its own")
    allow_private = _bool(env, "WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
    webhook_url = parse_webhook_url("WEBHOOK_URL", _get(env, "WEBHOOK_URL") or "", allow_private=allow_private)

    return Settings(
        entra_client_id=_get(env, "ENTRA_CLIENT_ID", required=True) or "",
        entra_client_credential=credential,
        entra_client_secret=secret,
        entra_tenant=tenant,
        cloud=cloud,
        authority_host=_https_url("ENTRA_AUTHORITY_HOST", _get(env, "ENTRA_AUTHORITY_HOST") or cloud.authority_host),
        graph_endpoint=_https_url("GRAPH_ENDPOINT", _get(env, "GRAPH_ENDPOINT") or cloud.graph_endpoint),
        key_vault_url=_https_url("KEY_VAULT_URL", _get(env, "KEY_VAULT_URL", required=True) or ""),
        key_vault_auth=kv_auth,
        key_vault_key_name=key_name,
        managed_identity_client_id=mi_client_id,
        storage=_storage(env),
        outbound_queue=outbound,
        events_queue=events,
        attachments_container=_get(env, "ATTACHMENTS_CONTAINER", "mail-attachments") or "mail-attachments",
        public_base_url=_https_url(
            "PUBLIC_BASE_URL", _get(env, "PUBLIC_BASE_URL", required=True) or "", allow_http_loopback=True
        ),
        allowed_return_origins=origins,
        refresh_after_days=_int(env, "REFRESH_AFTER_DAYS", 60, 1, 89),
        refresh_schedule=_ncrontab("REFRESH_SCHEDULE", _get(env, "REFRESH_SCHEDULE", "0 30 * * * *") or ""),
        enable_shared_mailboxes=_bool(env, "ENABLE_SHARED_MAILBOXES", False),
        enable_mail_readwrite=_bool(env, "ENABLE_MAIL_READWRITE", False),
        max_message_bytes=_int(env, "MAX_MESSAGE_BYTES", 25 * 1024 * 1024, 64 * 1024, 150 * 1024 * 1024),
        ticket_signing_key=_ticket_key(env),
        ca_bundle=ca_bundle,
        enable_sample_ui=_bool(env, "ENABLE_SAMPLE_UI", False),
        table_prefix=_table_prefix(env),
        mailbox_concurrency=_int(env, "MAILBOX_CONCURRENCY", 4, 1, 16),
        mailbox_messages_per_minute=_int(env, "MAILBOX_MESSAGES_PER_MINUTE", 30, 1, 10_000),
        mailbox_recipients_per_day=_int(env, "MAILBOX_RECIPIENTS_PER_DAY", 10_000, 1, 1_000_000),
        mailbox_message_window_seconds=float(_int(env, "MAILBOX_MESSAGE_WINDOW_SECONDS", 60, 1, 3600)),
        mailbox_recipient_window_seconds=float(_int(env, "MAILBOX_RECIPIENT_WINDOW_SECONDS", 86_400, 10, 7 * 86_400)),
        mailbox_recipients_per_message=_int(env, "MAILBOX_RECIPIENTS_PER_MESSAGE", 500, 1, 500),
        consumer_recipients_per_day=_int(env, "CONSUMER_RECIPIENTS_PER_DAY", 300, 1, 1_000_000),
        consumer_recipients_per_message=_int(env, "CONSUMER_RECIPIENTS_PER_MESSAGE", 100, 1, 500),
        mailbox_budget_lease_seconds=float(_int(env, "MAILBOX_BUDGET_LEASE_SECONDS", 60, 2, 600)),
        mailbox_max_wait_seconds=float(_int(env, "MAILBOX_MAX_WAIT_SECONDS", 5, 0, 60)),
        mailbox_upload_bytes_per_window=_int(
            env, "MAILBOX_UPLOAD_BYTES_PER_WINDOW", 150_000_000, 1_000_000, 150_000_000
        ),
        mailbox_upload_window_seconds=float(_int(env, "MAILBOX_UPLOAD_WINDOW_SECONDS", 300, 1, 3600)),
        daily_limit_max_hold_seconds=_int(env, "DAILY_LIMIT_MAX_HOLD_SECONDS", 3 * 86_400, 0, 6 * 86_400),
        tenant_external_recipient_limits=parse_tenant_limits(_get(env, "TENANT_EXTERNAL_RECIPIENT_LIMITS") or ""),
        send_as_endpoint=_send_as_endpoint(env),
        callback_queues=_callback_queues(env, outbound),
        keepalive_concurrency=_int(env, "KEEPALIVE_CONCURRENCY", 4, 1, KEEPALIVE_MAX_CONCURRENCY),
        keepalive_run_seconds=_int(env, "KEEPALIVE_RUN_SECONDS", 480, 10, KEEPALIVE_MAX_RUN_SECONDS),
        token_key_cache_size=_int(env, "TOKEN_KEY_CACHE_SIZE", 100_000, 100, TOKEN_KEY_CACHE_MAX),
        entra_home_tenant=_home_tenant(env, tenant),
        webhook_url=webhook_url,
        webhook_secrets=parse_webhook_secrets("WEBHOOK_SECRET", _get(env, "WEBHOOK_SECRET") or "", webhook_url),
        webhook_allow_private_targets=allow_private,
        webhook_queue=webhook_queue,
        events_message_encoding=_choice(env, "EVENTS_MESSAGE_ENCODING", EVENT_ENCODINGS),
    )


def _home_tenant(env: Mapping[str, str], tenant: str) -> str:
    """ENTRA_HOME_TENANT (a tenant id or domain), else ENTRA_TENANT when that names one tenant, else ""."""
    home = _get(env, "ENTRA_HOME_TENANT") or ""
    if home:
        if not _TENANT_RE.match(home) or home.lower() in _MULTI_TENANT:
            raise SettingsError("ENTRA_HOME_TENANT", f"must be the app registration's tenant id or domain: {home!r}")
        return home
    return "" if tenant.lower() in _MULTI_TENANT else tenant


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return load_settings()


def reset_settings_cache() -> None:
    """Forget the cached settings (tests and the dev host change the environment between runs)."""
    get_settings.cache_clear()


def settings_status(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """What the health endpoint reports: which parts are configured, never a value of a secret."""
    env = os.environ if env is None else env
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        return {"ok": False, "error": {"code": exc.code, "setting": exc.setting, "message": exc.message}}
    return {
        "ok": True,
        "storage": "identity" if settings.storage.uses_identity else "connection_string",
        "key_vault": urlsplit(settings.key_vault_url).hostname,
        "identity_authority": settings.authority,
        "client_credential": settings.entra_client_credential,
        "cloud": settings.cloud.name,
        "scopes": settings.graph_scopes,
    }
