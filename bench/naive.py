"""The naive baseline of B1: for every email, read the refresh token from Key Vault, redeem it, write the
new one back, send. What a team writes when it treats Key Vault as its only token store."""

from __future__ import annotations

import uuid
from typing import Any

import requests
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

SCOPES = ["Mail.Send"]


class NaiveSender:
    """One confidential client and one vault client per process; no token kept in memory between emails."""

    def __init__(self, kit: Any, admin: Any) -> None:
        self.kit = kit
        base, ca = admin.base_url, admin.ca_file
        vault_tid = admin.keyvault_config()["tenant_id"]
        secret = f"naive-kv-{uuid.uuid4().hex}"
        vault_app = admin.register_app(home_tid=vault_tid, display_name="naive vault user", secrets=[secret])
        credential = ClientSecretCredential(
            vault_tid,
            vault_app["client_id"],
            secret,
            authority=base,
            disable_instance_discovery=True,
            connection_verify=ca,
        )
        self.vault = SecretClient(
            vault_url=base, credential=credential, verify_challenge_resource=False, connection_verify=ca
        )
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = ca
        self.graph = base
        self.msal = kit.msal_app()  # msal.ConfidentialClientApplication for the tenant's own app

    def connect(self, user: str) -> str:
        """Auth-code flow once; stores the refresh token as a secret and returns the secret's name."""
        result = self.kit.sign_in(user, scopes=tuple(SCOPES), app=self.msal)
        name = f"naive-{uuid.uuid4().hex[:12]}"
        self.vault.set_secret(name, result["refresh_token"])
        return name

    def send(self, secret_name: str, to: str, subject: str) -> int:
        """Read secret, redeem refresh token, write secret, send: four round trips per email."""
        refresh_token = self.vault.get_secret(secret_name).value
        result = self.msal.acquire_token_by_refresh_token(refresh_token, SCOPES)
        if "access_token" not in result:
            raise RuntimeError(f"refresh failed: {result.get('error')}")
        self.vault.set_secret(secret_name, result["refresh_token"])
        body = {
            "message": {
                "subject": subject,
                "body": {"contentType": "Text", "content": "Plain body"},
                "toRecipients": [{"emailAddress": {"address": to}}],
            },
            "saveToSentItems": True,
        }
        resp = self.http.post(
            f"{self.graph}/v1.0/me/sendMail",
            json=body,
            headers={"Authorization": f"Bearer {result['access_token']}"},
            timeout=30,
        )
        return resp.status_code
