"""``python -m stack up``: Azurite + the emulator + the app under devhost, as child processes stopped by PID.

Everything lives under ``.run/`` (ignored by git): ``azurite/``, ``emulator/`` (CA, its key and the
emulated world, kept across restarts), ``local.settings.json``, ``stack-config.json`` (ports, keys and the
demo seed, so a second ``up`` brings back the same URLs, function key and connections), ``stack.json``
(the PIDs ``down`` and a second ``up`` look at) and one log per child. ``up --fresh`` wipes it all first.
The children run in their own sessions, so a Ctrl-C in the terminal reaches only this supervisor,
which then stops them in order (app, emulator, Azurite).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from stack.azurite import Azurite, free_port, port_is_free
from stack.seed import DEMO_PASSWORD, DemoSeed, ensure_token_key, local_settings, seed_demo

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 7071
# What each child's command line contains: a recorded PID only counts as ours if it still runs this.
MARKERS = {"azurite": "azurite", "emulator": "emulator", "devhost": "devhost", "supervisor": "stack"}


class StackError(RuntimeError):
    """The stack could not be brought up (the message says which part and where its log is)."""


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """True when ``pid`` runs (and, where /proc exists, its command line mentions ``marker``)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    cmdline = Path(f"/proc/{pid}/cmdline")
    if marker and cmdline.exists():
        try:
            return marker in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
    return True


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid`` (each child leads its own session), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
                if done == pid:
                    return
            except ChildProcessError:
                pass
            if not pid_alive(pid):
                return
            time.sleep(0.1)


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what}: the process exited with {proc.returncode}; see {log}{_tail(log)}")
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise StackError(f"{what}: not ready within {timeout:.0f}s; see {log}")


def _tail(log: Path | None, lines: int = 15) -> str:
    """The end of a process's log, for an error that is read where the log is gone (CI keeps only the output)."""
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:] if log else []
    except OSError:
        return ""
    return ("\n  " + "\n  ".join(text)) if text else ""


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session (stop it with :func:`stop_pid`), output appended to ``log``."""
    handle = open(log, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env if env is not None else {**os.environ, "PYTHONPATH": str(REPO)},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        handle.close()


def start_emulator_process(
    state_dir: Path, log: Path, python: str = sys.executable, *, port: int = 0, persist: bool = False
) -> tuple[subprocess.Popen, dict[str, Any]]:
    """``python -m emulator`` on ``port`` (0: a free one); returns the process and its emulator.json
    (base_url, ca_file, restored). ``persist`` keeps its CA and state in ``state_dir`` across restarts."""
    state_dir.mkdir(parents=True, exist_ok=True)
    info_file = state_dir / "emulator.json"
    info_file.unlink(missing_ok=True)  # never read a previous run's port
    cmd = [python, "-m", "emulator", "--port", str(port), "--state-dir", str(state_dir), "--log-level", "WARNING"]
    if persist:
        cmd.append("--persist")
    proc = spawn(cmd, log)

    def ready() -> dict[str, Any] | None:
        try:
            data = json.loads(info_file.read_text())
        except (OSError, ValueError):
            return None
        return data if data.get("pid") == proc.pid else None

    try:
        return proc, wait_until(ready, 30, "emulator", proc, log)
    except BaseException:
        stop_pid(proc.pid)
        raise


@dataclass
class LocalStack:
    """One local stack rooted at ``run_dir``; ``up()`` starts it, ``stop()`` ends it."""

    run_dir: Path = REPO / ".run"
    port: int = DEFAULT_PORT
    python: str = sys.executable
    fresh: bool = False  # wipe run_dir first (Azurite data, emulator state, keys): a brand-new stack
    out: Any = sys.stdout
    azurite: Azurite | None = None
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.run_dir / "stack.json"

    @property
    def config_file(self) -> Path:
        return self.run_dir / "stack-config.json"

    def _config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save_config(self, **changes: Any) -> None:
        config = {**self._config(), **changes}
        self.config_file.write_text(json.dumps(config, indent=2))
        self.config_file.chmod(0o600)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- is one already running? -------------------------------------------------------------------
    def running(self) -> dict[str, Any] | None:
        """The recorded state of a stack that still has a live process, else None."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        pids = state.get("pids", {})
        if any(pid_alive(pid, MARKERS.get(name)) for name, pid in pids.items()):
            return state
        return None

    def _record(self) -> None:
        pids = {name: proc.pid for name, proc in self.children.items()}
        if self.azurite and self.azurite.process:
            pids["azurite"] = self.azurite.process.pid
        pids["supervisor"] = os.getpid()
        self.info["pids"] = pids
        self.state_file.write_text(json.dumps(self.info, indent=2))

    # -- up ----------------------------------------------------------------------------------------
    def up(self) -> dict[str, Any]:
        """Start Azurite, the emulator (seeded) and the app; returns what the banner shows."""
        if self.fresh and self.run_dir.exists():
            self.say(f"--fresh: wiping {self.run_dir}")
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port()
        elif not port_is_free(self.port):
            chosen = free_port()
            self.say(f"port {self.port} is busy; using {chosen}")
            self.port = chosen
        app_url = f"http://127.0.0.1:{self.port}"
        self.info = {"base_url": app_url, "ui_url": f"{app_url}/api/ui", "started_at": time.time()}
        try:
            self._start_azurite()
            emu = self._start_emulator()
            seed = self._seed(emu, app_url)
            self._write_settings(emu, seed, app_url)
            self._start_devhost(app_url)
        except BaseException:
            self.stop()
            raise
        return self.info

    def _start_azurite(self) -> None:
        self.say("starting Azurite ...")
        previous = self._config().get("azurite_ports") or {}
        self.azurite = Azurite(self.run_dir / "azurite").start(timeout=60, preferred_ports=previous)
        self._save_config(azurite_ports=self.azurite.ports)
        self.info["storage"] = self.azurite.connection_string
        self._record()

    def _start_emulator(self) -> dict[str, Any]:
        self.say("starting the Entra / Graph / Key Vault emulator ...")
        previous = self._config().get("emulator_port") or 0
        port = previous if previous and port_is_free(previous) else 0
        proc, emu = start_emulator_process(
            self.run_dir / "emulator", self.run_dir / "emulator.log", self.python, port=port, persist=True
        )
        self._save_config(emulator_port=int(emu["base_url"].rsplit(":", 1)[1]))
        self.children["emulator"] = proc
        self.info["emulator_url"] = emu["base_url"]
        self.info["emulator_ca_file"] = emu["ca_file"]
        self._record()
        return emu

    def _seed(self, emu: dict[str, Any], app_url: str) -> DemoSeed:
        from emulator.client import EmulatorAdmin

        admin = EmulatorAdmin(emu["base_url"], emu["ca_file"])
        wait_until(lambda: _quiet(admin.health), 15, "emulator health", self.children["emulator"])
        saved = self._config().get("seed")
        if emu.get("restored") and saved:
            # The emulator brought its world back: same tenants, users, consents, vault. Only the app's
            # redirect URIs follow the app port (it may have moved if 7071 was taken).
            seed = DemoSeed(**saved)
            admin.update_app(
                seed.client_id,
                redirect_uris=[f"{app_url}/api/connect/callback", f"{app_url}/api/admin-consent/callback"],
            )
            ensure_token_key(admin, seed.operator_tid, seed.client_id, seed.client_secret)
            self.say("emulator state restored from the previous run (make run ARGS=--fresh starts over)")
        else:
            seed = seed_demo(admin, app_url)
            self._save_config(seed=asdict(seed))
        self.info["users"] = seed.users
        self.info["password"] = DEMO_PASSWORD
        return seed

    def _write_settings(self, emu: dict[str, Any], seed: DemoSeed, app_url: str) -> None:
        assert self.azurite is not None
        config = self._config()
        keys = config.get("keys") or {
            "function_key": "local-" + secrets.token_urlsafe(18),
            "master_key": "local-master-" + secrets.token_urlsafe(18),
            "ticket_key": secrets.token_urlsafe(48),
        }
        self._save_config(keys=keys)
        function_key = keys["function_key"]
        doc = local_settings(
            REPO / "local.settings.sample.json",
            seed=seed,
            emulator_base_url=emu["base_url"],
            ca_file=str(Path(emu["ca_file"]).resolve()),
            storage_connection_string=self.azurite.connection_string,
            app_base_url=app_url,
            function_key=function_key,
            master_key=keys["master_key"],
            ticket_key=keys["ticket_key"],
            environ=os.environ,
        )
        overridden = doc.pop("_overridden", [])
        path = self.run_dir / "local.settings.json"
        path.write_text(json.dumps(doc, indent=2))
        path.chmod(0o600)
        self.settings_values = doc["Values"]
        self.info["settings_file"] = str(path)
        self.info["function_key"] = function_key
        self.info["overridden"] = overridden

    def _start_devhost(self, app_url: str) -> None:
        self.say("starting the app (devhost) ...")
        ready_file = self.run_dir / "devhost.json"
        ready_file.unlink(missing_ok=True)
        log = self.run_dir / "devhost.log"
        # devhost lets the environment win over the settings file: put the stack's values in it too.
        env = {**os.environ, **self.settings_values, "PYTHONPATH": str(REPO)}
        cmd = [self.python, "-m", "devhost", "--app-dir", str(REPO), "--settings", self.info["settings_file"]]
        cmd += ["--port", str(self.port), "--ready-file", str(ready_file)]
        proc = self._spawn("devhost", cmd, log, env=env)
        self._record()
        wait_until(ready_file.exists, 60, "devhost", proc, log)
        http = requests.Session()
        http.trust_env = False  # a proxy from the environment must not answer for 127.0.0.1

        def healthy() -> bool:
            try:
                resp = http.get(f"{app_url}/api/health", timeout=2)
                return resp.status_code == 200 and resp.json().get("ok") is True
            except (requests.RequestException, ValueError):
                return False

        try:
            wait_until(healthy, 60, "app health (GET /api/health)", proc, log)
        finally:
            http.close()

    def _spawn(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = spawn(cmd, log, env)
        self.children[name] = proc
        return proc

    # -- foreground --------------------------------------------------------------------------------
    def serve_forever(self) -> int:
        """Block until SIGINT/SIGTERM or until a child dies; then stop everything. Returns the exit code."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        code = 0
        while not stop.wait(0.5):
            dead = [name for name, proc in self.children.items() if proc.poll() is not None]
            if self.azurite and self.azurite.process and self.azurite.process.poll() is not None:
                dead.append("azurite")
            if dead:
                self.say(f"{', '.join(dead)} stopped unexpectedly; see {self.run_dir}/*.log. Stopping the stack.")
                code = 1
                break
        self.say("stopping ...")
        self.stop()
        self.say("stopped.")
        return code

    def stop(self) -> None:
        """Stop the children by PID: app first, then the emulator, then Azurite."""
        for name in ("devhost", "emulator"):
            proc = self.children.pop(name, None)
            if proc is not None and proc.poll() is None:
                stop_pid(proc.pid)
        if self.azurite is not None:
            self.azurite.stop()
        self.state_file.unlink(missing_ok=True)


def down(run_dir: Path = REPO / ".run", out: Any = sys.stdout) -> bool:
    """Stop a stack started by ``up`` from its recorded PIDs; False when none was running."""
    state_file = run_dir / "stack.json"
    try:
        pids = json.loads(state_file.read_text()).get("pids", {})
    except (OSError, ValueError):
        print("no local stack is recorded in " + str(state_file), file=out)
        return False
    found = False
    supervisor = pids.get("supervisor")
    if supervisor != os.getpid() and pid_alive(supervisor, MARKERS["supervisor"]):
        found = True
        os.kill(supervisor, signal.SIGTERM)  # it stops its children in order
        deadline = time.monotonic() + 30
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.1)
    for name in ("devhost", "emulator", "azurite"):
        pid = pids.get(name)
        if pid_alive(pid, MARKERS[name]):
            found = True
            stop_pid(pid)
    state_file.unlink(missing_ok=True)
    print("local stack stopped" if found else "the recorded stack was not running", file=out)
    return found


def banner(info: dict[str, Any], foreground: bool = True) -> str:
    users = info.get("users", {})
    rows = [
        ("Sample page", info["ui_url"]),
        ("Health", f"{info['base_url']}/api/health"),
        ("Mailboxes", f"{info['emulator_url']}/_emulator/ui/mailboxes"),
        ("Demo users", f"{users.get('alice')}, {users.get('bob')} (password: {info.get('password')})"),
        ("", f"shared mailbox {users.get('shared')} (alice may send as it)"),
        ("", f"{users.get('carol')}: her tenant needs admin approval; {users.get('tenant_admin')} can approve"),
        ("Function key", f"{info['function_key']}  (header x-functions-key, e.g. POST /api/connections)"),
        ("Emulator CA", f"{info['emulator_ca_file']} (kept across restarts; the app trusts it: MAILBRIDGE_CA_BUNDLE)"),
        ("Storage", f"{info.get('storage')}  (Azurite: queue producers use this)"),
        ("Settings", f"{info['settings_file']}; logs in {Path(info['settings_file']).parent}/*.log"),
        ("From env", ", ".join(info.get("overridden") or []) or "(none: e.g. ENABLE_SHARED_MAILBOXES=false make run)"),
        ("Start over", "make run ARGS=--fresh (wipes Azurite data, the emulator's state and the keys)"),
        ("Stop", ("Ctrl-C here, or " if foreground else "") + "`python -m stack down`"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["", "Mailbridge local stack is up", ""]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines += [
        "",
        "  Your browser does not know the emulator's certificate: on the sign-in page either accept the",
        "  warning or import the CA file above. Open the sample page, enter any user reference, click Connect.",
        "",
    ]
    return "\n".join(lines)


def _quiet(fn) -> Any:
    try:
        return fn()
    except Exception:  # polling: any failure means "not yet"
        return None
