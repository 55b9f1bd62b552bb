#!/usr/bin/env bash
# Renders the kustomize base and each overlay offline and validates the result:
#   1. `kubectl kustomize` (or a standalone `kustomize build`) renders it - no cluster needed;
#   2. kubernetes-validate (PyPI, schemas bundled) checks every object strictly (unknown fields are
#      errors) against the oldest and the newest Kubernetes versions we support;
#   3. scripts/k8s_policy.py checks agora's own rules (probes, hardening, resources, wiring).
# Exits non-zero on the first failing render or any invalid object.
#
# Without a kustomize-capable kubectl (kubectl >= 1.21 embeds kustomize; the rust-svc machine image
# ships one) it falls back to validating the base's files one by one, and says so loudly. Debian's
# own `kubernetes-client` (1.20) is no help: its kustomize v2 cannot read today's kustomization files.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

versions="${AGORA_K8S_VERSIONS:-1.29.0 1.37.0}"
venv="$(bash scripts/pyenv.sh)"
validate="$venv/bin/kubernetes-validate"
py="$venv/bin/python"
out="$(mktemp -d -t agora-k8s.XXXXXX)"
trap 'rm -rf "$out"' EXIT

render() {
  if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize "$1"
  else
    kustomize build "$1"
  fi
}

validate_file() {
  local file="$1" v
  for v in $versions; do
    "$validate" --strict --quiet -k "$v" "$file"
  done
}

renderer=""
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize deploy/k8s/base >/dev/null 2>&1; then
  renderer="kubectl kustomize ($(kubectl version --client 2>/dev/null | grep -i kustomize | tr -d '\n'))"
elif command -v kustomize >/dev/null 2>&1 && kustomize build deploy/k8s/base >/dev/null 2>&1; then
  renderer="kustomize build ($(kustomize version 2>/dev/null | tr -d '\n'))"
fi

if [ -z "$renderer" ]; then
  echo "WARNING: no kustomize-capable kubectl or kustomize here: overlays NOT rendered;" >&2
  echo "WARNING: validating deploy/k8s/base/*.yaml file by file instead" >&2
  for f in deploy/k8s/base/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    validate_file "$f"
    echo "k8s: $f valid (Kubernetes $versions)"
  done
  echo "k8s-validate: base files valid (overlays not rendered)"
  exit 0
fi

echo "k8s: rendering with $renderer; validating against Kubernetes $versions"
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir="${dir%/}"
  name="$(basename "$dir")"
  file="$out/$name.yaml"
  render "$dir" >"$file"
  validate_file "$file"
  if [ "$dir" = deploy/k8s/base ]; then
    "$py" scripts/k8s_policy.py "$file"
  else
    "$py" scripts/k8s_policy.py "$file" --overlay "$name"
  fi
  echo "k8s: $dir renders $(grep -c '^kind:' "$file") objects, all valid"
done
echo "k8s-validate: all manifests valid"
