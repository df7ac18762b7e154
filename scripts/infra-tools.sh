#!/usr/bin/env bash
# Create or update .venv-infra: checkov (with its own pinned pycep-parser) plus PyYAML, and the
# newer pycep-parser that tests/test_infra.py uses to parse every .bicep file, installed apart
# in .venv-infra/parser (see requirements-infra.txt for why there are two).
#
# Idempotent: pip runs only when requirements-infra.txt changed since the last successful run
# (a stamp file holds its hash). Never reads stdin, never prompts: safe under CI=true.
# Environment: PYTHON (interpreter for the venv, default python3), INFRA_VENV (venv path).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${INFRA_VENV:-$repo_root/.venv-infra}"
requirements="$repo_root/requirements-infra.txt"
stamp="$venv/.requirements-infra.sha256"
python_bin="${PYTHON:-python3}"

exec </dev/null
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# One installer at a time (two test sessions starting together). The lock lives inside the
# venv folder so that it is ignored with it.
mkdir -p "$venv"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv/.install.lock"
  flock 9
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "infra-tools: $venv is up to date"
  exit 0
fi

parser_requirement="$(sed -n 's/^#parser:[[:space:]]*//p' "$requirements")"
if [[ -z "$parser_requirement" ]]; then
  echo "infra-tools: no '#parser:' line in $requirements" >&2
  exit 1
fi

if [[ ! -x "$venv/bin/python" ]]; then
  echo "infra-tools: creating $venv"
  "$python_bin" -m venv "$venv"
fi

echo "infra-tools: installing $requirements"
"$venv/bin/python" -m pip install --quiet -r "$requirements"

echo "infra-tools: installing $parser_requirement into $venv/parser"
rm -rf "$venv/parser"
"$venv/bin/python" -m pip install --quiet --no-deps --target "$venv/parser" "$parser_requirement"

# Both parsers and checkov must import before the stamp says the venv is good.
"$venv/bin/python" -c "import checkov, yaml, pycep"
PYTHONPATH="$venv/parser" "$venv/bin/python" -c "import pycep"

echo "$want" >"$stamp"
echo "infra-tools: done"
