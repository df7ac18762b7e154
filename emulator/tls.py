"""TLS material: a throw-away CA (trustme) and a server certificate for the emulator's host names."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import trustme

CA_FILENAME = "emulator-ca.pem"
CA_KEY_FILENAME = "emulator-ca-key.pem"


class TLSMaterial:
    """A fresh CA per emulator start, or with ``keep`` the one in ``state_dir`` (so a browser's certificate
    exception or an imported CA survives a restart); clients trust it through ``ca_path``, never verify=False."""

    def __init__(self, state_dir: Path, hostnames: list[str], keep: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ca_path = self.state_dir / CA_FILENAME
        key_path = self.state_dir / CA_KEY_FILENAME
        if keep and self.ca_path.exists() and key_path.exists():
            self.ca = trustme.CA.from_pem(self.ca_path.read_bytes(), key_path.read_bytes())
        else:
            self.ca = trustme.CA(organization_name="Mailbridge emulator CA")
            self.ca.cert_pem.write_to_path(str(self.ca_path))
            if keep:
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(self.ca.private_key_pem.bytes())
        names = list(dict.fromkeys([*hostnames, "127.0.0.1", "localhost", "::1"]))
        self.server_cert = self.ca.issue_cert(*names)

    def server_context(self) -> ssl.SSLContext:
        """Server-side SSL context presenting the emulator certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.server_cert.configure_cert(ctx)
        return ctx
