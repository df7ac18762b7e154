"""Optional persistence of the emulator's state across restarts (``python -m emulator --persist``).

The local stack (``make run``) keeps its Azurite data in ``.run/``; an emulator that restarted empty would
leave those tables pointing at tenants, users, refresh tokens and Key Vault secrets that no longer
exist (every send then fails ``reauth_required``). With ``--persist`` the directory (tenants, users,
consents), app registrations, Entra's codes and refresh tokens, the signing key, the vault and the
mailboxes are written to ``<state-dir>/state.pickle`` every few seconds and at shutdown, and read back
at start. Counters, fault rules and the clock offset are not kept: they are test knobs.

The file is ours, written by this process into a directory only the developer's user can read
(mode 0600), which is why ``pickle`` is acceptable here; it is never read from anywhere else.
"""

from __future__ import annotations

import io
import logging
import os
import pickle  # noqa: S403 - our own state file, see the module docstring
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger(__name__)

STATE_FILE = "state.pickle"
# EmulatorState attributes that are the emulated world (not test knobs, not the server).
PERSISTED = ("directory", "apps", "entra", "keys", "keyvault", "graph", "identity_header")
EXTENSIONS = ("graph_ndr",)
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def _private_key(pem: bytes) -> rsa.RSAPrivateKey:
    return serialization.load_pem_private_key(pem, password=None)  # type: ignore[return-value]


def _public_key(pem: bytes) -> rsa.RSAPublicKey:
    return serialization.load_pem_public_key(pem)  # type: ignore[return-value]


class _Pickler(pickle.Pickler):
    """Locks become fresh locks; RSA keys travel as PEM (neither pickles natively)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _LOCK_TYPES[1]):
            return threading.RLock, ()
        if isinstance(obj, _LOCK_TYPES[0]):
            return threading.Lock, ()
        if isinstance(obj, rsa.RSAPrivateKey):
            pem = obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            return _private_key, (pem,)
        if isinstance(obj, rsa.RSAPublicKey):
            pem = obj.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            return _public_key, (pem,)
        return NotImplemented


def snapshot(state: Any) -> bytes:
    """The persisted part of ``state`` as bytes (taken under the state's lock)."""
    with state.lock:
        world = {name: getattr(state, name) for name in PERSISTED}
        world["extensions"] = {k: state.extensions[k] for k in EXTENSIONS if k in state.extensions}
        buf = io.BytesIO()
        _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(world)
    return buf.getvalue()


def _adopt(live: Any, loaded: Any) -> Any:
    """Put ``loaded``'s data into the live object (route handlers hold references to it), keeping the live
    object's callables (e.g. the clock function a store was built with)."""
    if live is None or not hasattr(live, "__dict__") or type(live) is not type(loaded):
        return loaded
    for key, value in vars(loaded).items():
        if callable(value) and not isinstance(value, type) and callable(getattr(live, key, None)):
            continue
        setattr(live, key, value)
    return live


def restore(state: Any, path: Path) -> bool:
    """Load ``path`` into ``state`` (after the services registered); False when there is nothing to load."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False
    try:
        world = pickle.loads(raw)  # noqa: S301 - our own state file, see the module docstring
    except Exception:  # a file from another version of the emulator: start empty, keep it aside
        log.warning("emulator state %s is unreadable; starting empty (kept as %s.bad)", path, path.name)
        path.replace(path.with_suffix(".bad"))
        return False
    with state.lock:
        for name in PERSISTED:
            if name in world:
                setattr(state, name, _adopt(getattr(state, name), world[name]))
        for key, value in world.get("extensions", {}).items():
            state.extensions[key] = _adopt(state.extensions.get(key), value)
    return True


class Saver:
    """Writes the state file every ``interval`` seconds (when it changed) and once more at stop."""

    def __init__(self, state: Any, path: Path, interval: float = 2.0) -> None:
        self.state, self.path, self.interval = state, path, interval
        self._stop = threading.Event()
        self._last: bytes | None = None
        self._thread = threading.Thread(target=self._run, name="emulator-persist", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.save()

    def save(self) -> None:
        try:
            data = snapshot(self.state)
        except Exception:
            log.exception("could not snapshot the emulator state")
            return
        if data == self._last:
            return
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        tmp.replace(self.path)
        self._last = data

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.save()
