#!/usr/bin/env bash
# The project's commands. `scripts/dev.sh up` brings up the local stack; `scripts/dev.sh test` runs every test.
# Each bootstraps what it needs (venv, pip packages, Azurite via npm) idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${MAILBRIDGE_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

bootstrap() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.requirements.sha256"
  local want
  want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing Python packages"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # The runtime lock first, hash-checked (what the Functions build deploys), then the dev tools; pip check
    # then fails if a dev tool moved a runtime package off its lock (tests/test_dependencies.py says which).
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    "$VENV/bin/python" -m pip check
    echo "$want" > "$stamp"
  fi
  "$VENV/bin/python" -c "from stack.azurite import ensure_installed; ensure_installed()"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  bootstrap)
    bootstrap
    ;;
  up)
    bootstrap
    exec "$VENV/bin/python" -m stack up "$@"
    ;;
  test)
    bootstrap
    "$VENV/bin/python" -m ruff check .
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: scripts/dev.sh {up|test|bootstrap} [args...]" >&2
    exit 2
    ;;
esac
