"""shared.base.settings: every setting parsed once, national clouds, and errors that name the culprit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.base.errors import SettingsError
from shared.base.settings import KEEPALIVE_MAX_RUN_SECONDS, load_settings, settings_status

REPO = Path(__file__).resolve().parent.parent

BASE = {
    "ENTRA_CLIENT_ID": "app-id",
    "ENTRA_CLIENT_SECRET": "s3cret-value",
    "KEY_VAULT_URL": "https://kv-example.vault.azure.net/",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "PUBLIC_BASE_URL": "https://mailbridge.example.com",
    "ALLOWED_RETURN_ORIGINS": "https://app.example.com, https://APP.example.com,http://localhost:3000",
    "TICKET_SIGNING_KEY": "x" * 40,
}


def test_defaults_are_least_privilege_public_cloud():
    s = load_settings(BASE)
    assert s.graph_scopes == ["Mail.Send"]
    assert s.cloud.name == "public" and s.authority == "https://login.microsoftonline.com/organizations"
    assert s.graph_endpoint == "https://graph.microsoft.com"
    assert s.key_vault_url == "https://kv-example.vault.azure.net"
    assert s.allowed_return_origins == ("https://app.example.com", "http://localhost:3000")
    assert s.refresh_after_days == 60 and s.refresh_schedule == "0 30 * * * *"
    assert s.outbound_poison_queue == "outbound-mail-poison"
    assert s.entra_client_credential == "secret" and s.tls_verify is True


def test_keepalive_settings_and_a_run_that_ends_inside_the_function_timeout():
    s = load_settings(BASE)
    assert (s.keepalive_concurrency, s.keepalive_run_seconds) == (4, 480)
    s = load_settings({**BASE, "KEEPALIVE_CONCURRENCY": "32", "KEEPALIVE_RUN_SECONDS": "540"})
    assert (s.keepalive_concurrency, s.keepalive_run_seconds) == (32, 540)
    # The longest run allowed leaves a minute of host.json's functionTimeout for the refreshes still in flight.
    timeout = json.loads((REPO / "host.json").read_text())["functionTimeout"]
    hours, minutes, seconds = (int(x) for x in timeout.split(":"))
    assert KEEPALIVE_MAX_RUN_SECONDS + 60 <= hours * 3600 + minutes * 60 + seconds


def test_secrets_stay_out_of_repr():
    text = repr(load_settings(BASE))
    assert "s3cret-value" not in text and "x" * 40 not in text and "UseDevelopmentStorage" not in text


def test_scope_switches():
    s = load_settings({**BASE, "ENABLE_SHARED_MAILBOXES": "true", "ENABLE_MAIL_READWRITE": "yes"})
    assert s.graph_scopes == ["Mail.Send", "Mail.Send.Shared", "Mail.ReadWrite"]


@pytest.mark.parametrize(
    ("cloud", "login", "graph", "scope"),
    [
        (
            "usgov",
            "https://login.microsoftonline.us",
            "https://graph.microsoft.us",
            "https://graph.microsoft.us/Mail.Send",
        ),
        ("usgovdod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us", None),
        ("china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn", None),
    ],
)
def test_national_clouds_pick_every_host(cloud, login, graph, scope):
    s = load_settings({**BASE, "AZURE_CLOUD": cloud})
    assert s.authority_host == login and s.graph_endpoint == graph
    assert s.graph_scopes[0] == (scope or f"{graph}/Mail.Send")


def test_explicit_overrides_win_over_the_cloud_preset():
    s = load_settings(
        {**BASE, "ENTRA_AUTHORITY_HOST": "https://127.0.0.1:8443", "GRAPH_ENDPOINT": "https://127.0.0.1:8443/"}
    )
    assert s.authority == "https://127.0.0.1:8443/organizations" and s.graph_endpoint == "https://127.0.0.1:8443"
    assert s.graph_scopes == ["Mail.Send"]  # scopes name the cloud's Graph resource, not the override host


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"ENTRA_CLIENT_ID": ""}, "ENTRA_CLIENT_ID"),
        ({"KEY_VAULT_URL": None}, "KEY_VAULT_URL"),
        ({"KEY_VAULT_URL": "http://kv.example.com"}, "KEY_VAULT_URL"),
        ({"AzureWebJobsStorage": None}, "AzureWebJobsStorage"),
        ({"TICKET_SIGNING_KEY": "short"}, "TICKET_SIGNING_KEY"),
        ({"TICKET_SIGNING_KEY": "@Microsoft.KeyVault(SecretUri=https://x/secrets/y)"}, "TICKET_SIGNING_KEY"),
        ({"ALLOWED_RETURN_ORIGINS": "https://app.example.com/path"}, "ALLOWED_RETURN_ORIGINS"),
        ({"ALLOWED_RETURN_ORIGINS": "http://evil.example.com"}, "ALLOWED_RETURN_ORIGINS"),
        ({"ALLOWED_RETURN_ORIGINS": " , "}, "ALLOWED_RETURN_ORIGINS"),
        ({"AZURE_CLOUD": "mars"}, "AZURE_CLOUD"),
        ({"ENTRA_TENANT": "not a tenant"}, "ENTRA_TENANT"),
        ({"REFRESH_AFTER_DAYS": "95"}, "REFRESH_AFTER_DAYS"),
        ({"REFRESH_AFTER_DAYS": "soon"}, "REFRESH_AFTER_DAYS"),
        ({"REFRESH_SCHEDULE": "0 3 * * *"}, "REFRESH_SCHEDULE"),
        ({"ENABLE_MAIL_READWRITE": "maybe"}, "ENABLE_MAIL_READWRITE"),
        ({"OUTBOUND_QUEUE": "Bad_Queue"}, "OUTBOUND_QUEUE"),
        ({"ENTRA_CLIENT_SECRET": None}, "ENTRA_CLIENT_CREDENTIAL"),
        ({"ENTRA_CLIENT_CREDENTIAL": "managed_identity"}, "MANAGED_IDENTITY_CLIENT_ID"),
        ({"MAILBRIDGE_CA_BUNDLE": "/nonexistent/ca.pem"}, "MAILBRIDGE_CA_BUNDLE"),
        ({"KEEPALIVE_CONCURRENCY": "0"}, "KEEPALIVE_CONCURRENCY"),
        ({"KEEPALIVE_CONCURRENCY": "65"}, "KEEPALIVE_CONCURRENCY"),
        ({"KEEPALIVE_RUN_SECONDS": "600"}, "KEEPALIVE_RUN_SECONDS"),
        ({"KEEPALIVE_RUN_SECONDS": "soon"}, "KEEPALIVE_RUN_SECONDS"),
        ({"TOKEN_KEY_CACHE_SIZE": "10"}, "TOKEN_KEY_CACHE_SIZE"),
        ({"TOKEN_KEY_CACHE_SIZE": "2000000"}, "TOKEN_KEY_CACHE_SIZE"),
    ],
)
def test_bad_settings_name_the_setting(change, setting):
    env = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert info.value.setting == setting
    assert setting in str(info.value)


def test_identity_based_storage_and_managed_identity_credential():
    env = {k: v for k, v in BASE.items() if k not in {"AzureWebJobsStorage", "ENTRA_CLIENT_SECRET"}}
    env |= {
        "AzureWebJobsStorage__accountName": "stmailbridge",
        "ENTRA_CLIENT_CREDENTIAL": "managed_identity",
        "MANAGED_IDENTITY_CLIENT_ID": "mi-client-id",
        "KEY_VAULT_AUTH": "managed_identity",
    }
    s = load_settings(env)
    assert s.storage.uses_identity
    assert s.storage.queue_service_uri == "https://stmailbridge.queue.core.windows.net"
    assert s.entra_client_secret is None and s.managed_identity_client_id == "mi-client-id"


def test_status_reports_configuration_without_secrets():
    ok = settings_status(BASE)
    assert ok["ok"] is True and ok["storage"] == "connection_string" and ok["key_vault"] == "kv-example.vault.azure.net"
    assert "s3cret-value" not in json.dumps(ok)
    bad = settings_status({k: v for k, v in BASE.items() if k != "PUBLIC_BASE_URL"})
    assert bad["ok"] is False and bad["error"]["setting"] == "PUBLIC_BASE_URL"


def test_sample_settings_list_every_setting_the_code_reads():
    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    source = (REPO / "shared" / "base" / "settings.py").read_text()
    import re

    read = set(re.findall(r'"([A-Z][A-Za-z_]+(?:__[A-Za-z]+)?)"', source))
    read = {n for n in read if n.isupper() or n.startswith("AzureWebJobsStorage")}
    read -= {"AzureWebJobsStorage__accountName"}  # identity-based alternative, documented in docs/settings.md
    missing = {n for n in read if n not in sample and not n.startswith("AzureWebJobsStorage__")}
    assert not missing, f"local.settings.sample.json lacks {sorted(missing)}"
    load_settings({**sample, "MAILBRIDGE_CA_BUNDLE": ""})  # the sample itself is valid
