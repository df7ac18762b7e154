#!/usr/bin/env bash
# Regenerate requirements.txt (the runtime lock: the whole closure of requirements.in, pinned, with hashes)
# with pip-tools in a throw-away venv of its own, resolved against PyPI for this Python (3.11, Linux: what
# Flex Consumption runs). Run it after editing requirements.in; tests/test_dependencies.py checks the result.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOL=${TMPDIR:-/tmp}/mailbridge-pip-tools
PIP_TOOLS_VERSION=7.7.0
[ -x "$TOOL/bin/pip-compile" ] || { python3 -m venv "$TOOL" && "$TOOL/bin/pip" install --quiet "pip-tools==$PIP_TOOLS_VERSION"; }
# Only PyPI: no pip configuration of this machine (local wheel folders, extra indexes) leaks into the lock.
CUSTOM_COMPILE_COMMAND=scripts/lock.sh PIP_CONFIG_FILE=/dev/null "$TOOL/bin/pip-compile" --quiet --generate-hashes --no-strip-extras \
  --allow-unsafe --index-url https://pypi.org/simple --no-emit-index-url --no-emit-find-links \
  --output-file requirements.txt requirements.in
