#!/usr/bin/env bash
# Creates .venv-bench (matplotlib + the peers msgraph-sdk and O365 from PyPI, plus the app's own
# runtime requirements so peer scripts can share bench helpers). Idempotent: reinstalls only when
# a requirements file changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MAILBRIDGE_BENCH_VENV:-$PWD/.venv-bench}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(cat bench/requirements.txt requirements.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing benchmark packages into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
  echo "$want" > "$stamp"
fi
