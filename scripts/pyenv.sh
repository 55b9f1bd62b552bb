#!/usr/bin/env bash
# Ensures the cached Python venv with scripts/requirements.txt exists and prints its path.
#   py="$(bash scripts/pyenv.sh)/bin/python"
# The venv lives under $HOME/.cache (override: AGORA_PYENV) and is rebuilt when requirements.txt
# changes. Progress goes to stderr; stdout carries only the path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
reqs="$here/requirements.txt"
venv="${AGORA_PYENV:-${XDG_CACHE_HOME:-$HOME/.cache}/agora/pyenv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$reqs" | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv"
  exit 0
fi

echo "pyenv: creating $venv" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv" >&2
ok=""
for attempt in 1 2 3; do  # a registry hiccup should not fail CI
  if "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs" >&2; then
    ok=1
    break
  fi
  echo "pyenv: pip install failed (attempt $attempt), retrying" >&2
  sleep $((attempt * 5))
done
if [ -z "$ok" ]; then
  echo "pyenv: could not install $reqs" >&2
  exit 1
fi
echo "$want" >"$stamp"
echo "$venv"
