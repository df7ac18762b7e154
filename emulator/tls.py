"""TLS material: a throw-away CA (trustme) and a server certificate for the emulator's host names."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

CA_FILENAME = "emulator-ca.pem"


class TLSMaterial:
    """A fresh CA per emulator start; clients trust it through ``ca_path`` (never verify=False)."""

    def __init__(self, state_dir: Path, hostnames: list[str]) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="Mailbridge emulator CA")
        names = list(dict.fromkeys([*hostnames, "127.0.0.1", "localhost", "::1"]))
        self.server_cert = self.ca.issue_cert(*names)
        self.ca_path = self.state_dir / CA_FILENAME
        self.ca.cert_pem.write_to_path(str(self.ca_path))

    def server_context(self) -> ssl.SSLContext:
        """Server-side SSL context presenting the emulator certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server_cert.configure_cert(ctx)
        return ctx
