"""Azurite (Storage emulator) installed with npm at a pinned version, started on free ports, stopped by PID.

By default Azurite speaks HTTP and takes the well-known account key (a connection string). ``Azurite(...,
tls=(cert, key), oauth=True)`` starts it as Azure is reached with shared keys off: HTTPS, and bearer tokens
(``--oauth basic``: Azurite checks a token's issuer, audience and lifetime, not its signature). Requests that
a SharedKey signature would have caught (a URL rewritten on the way, issue 23) are then seen as Azure sees them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

AZURITE_VERSION = "3.35.0"  # the last release that runs on Node 20
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development account key (public, documented; it protects nothing).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # noqa: S105
REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / ".tools" / "azurite"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nobody listens on ``port`` (a port in TIME_WAIT counts as free, as for the HTTP server)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except (OSError, ValueError):
            return False
        return True


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_installed(tools_dir: Path = TOOLS) -> Path:
    """Install azurite@AZURITE_VERSION under ``tools_dir`` unless it is already there; returns the launcher."""
    launcher = tools_dir / "node_modules" / ".bin" / "azurite"
    manifest = tools_dir / "node_modules" / "azurite" / "package.json"
    if launcher.exists() and manifest.exists() and json.loads(manifest.read_text()).get("version") == AZURITE_VERSION:
        return launcher
    if shutil.which("npm") is None:
        raise RuntimeError("npm is required to install Azurite (Node 20 + npm)")
    tools_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "--prefix",
            str(tools_dir),
            f"azurite@{AZURITE_VERSION}",
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return launcher


@dataclass
class Azurite:
    """One Azurite process (blob, queue and table) with its state folder and ports."""

    location: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    tls: tuple[Path, Path] | None = None  # (certificate chain PEM, private key PEM): serve HTTPS
    oauth: bool = False  # accept bearer tokens (--oauth basic; Azurite allows it over HTTPS only)

    def start(self, timeout: float = 30.0, preferred_ports: dict[str, int] | None = None) -> Azurite:
        """Start on free ports (``preferred_ports`` when all of them are free: the local stack keeps its
        connection string across restarts) and wait until all three services answer."""
        launcher = ensure_installed()
        self.location.mkdir(parents=True, exist_ok=True)
        wanted = preferred_ports or {}
        if set(wanted) == {"blob", "queue", "table"} and all(port_is_free(p) for p in wanted.values()):
            self.ports = dict(wanted)
        else:
            self.ports = {"blob": free_port(), "queue": free_port(), "table": free_port()}
        log = open(self.location / "azurite.log", "ab")  # noqa: SIM115 - owned by the child process
        secure: list[str] = []
        if self.tls:
            secure += ["--cert", str(self.tls[0]), "--key", str(self.tls[1])]
        if self.oauth:
            if not self.tls:
                raise ValueError("Azurite takes bearer tokens over HTTPS only: give tls=(cert, key)")
            secure += ["--oauth", "basic"]
        self.process = subprocess.Popen(
            [
                str(launcher),
                *secure,
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
                # Node closes idle keep-alive connections after 5 s (Azurite's default); a client reusing one at that
                # moment gets a connection reset, and azure-core never retries a POST (a Table insert) on it. Azure
                # Storage keeps idle connections far longer; so does the local Azurite (found: a claim insert reset
                # after a 5 s idle pause failed tests/test_reliability_credentials.py now and then).
                *("--blobKeepAliveTimeout", "300", "--queueKeepAliveTimeout", "300", "--tableKeepAliveTimeout", "300"),
                "--location",
                str(self.location),
                "--blobHost",
                self.host,
                "--queueHost",
                self.host,
                "--tableHost",
                self.host,
                "--blobPort",
                str(self.ports["blob"]),
                "--queuePort",
                str(self.ports["queue"]),
                "--tablePort",
                str(self.ports["table"]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_healthy(timeout)
        (self.location / "azurite.json").write_text(
            json.dumps({"pid": self.process.pid, "ports": self.ports, "connection_string": self.connection_string})
        )
        return self

    def wait_healthy(self, timeout: float) -> None:
        """Poll each service port until it accepts connections and answers HTTP; raise on timeout or exit."""
        deadline = time.monotonic() + timeout
        pending = dict(self.ports)
        while pending:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.process.returncode}; see {self.location}/azurite.log")
            for name, port in list(pending.items()):
                try:
                    with self._probe(port) as sock:
                        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        if sock.recv(12).startswith(b"HTTP/1.1"):
                            del pending[name]
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Azurite did not answer on {pending} within {timeout}s")
            if pending:
                time.sleep(0.1)

    def _probe(self, port: int) -> socket.socket:
        sock = socket.create_connection((self.host, port), timeout=0.5)
        if not self.tls:
            return sock
        # A liveness probe of our own child on loopback (does it speak HTTP yet?), not a trust decision: the
        # clients of the tests verify the certificate against its CA.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context.wrap_socket(sock)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def service_url(self, kind: str) -> str:
        """The account URL of one service (``blob``, ``queue``, ``table``): what identity-based clients take."""
        return f"{self.scheme}://{self.host}:{self.ports[kind]}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        base = f"{self.scheme}://{self.host}"
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.ports['blob']}/{ACCOUNT};"
            f"QueueEndpoint={base}:{self.ports['queue']}/{ACCOUNT};"
            f"TableEndpoint={base}:{self.ports['table']}/{ACCOUNT};"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process by its PID: SIGTERM, then SIGKILL if it lingers."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
