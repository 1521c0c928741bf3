#!/usr/bin/env bash
# Runs a command with a real schema registry (deploy/registry/registry.sh) started for it in
# a temporary directory, then stops the registry and removes the directory:
#
#   deploy/registry/with-registry.sh go test -count=1 -run RealRegistry ./engine
#
# The command sees SEGD_REGISTRY_DIR (the directory registry.sh kill/start take, so tests
# can crash and restart the registry) and SEGD_REGISTRY_URL (its Confluent-compatible API).
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
cleanup() { "$here/registry.sh" stop "$dir" || true; rm -rf "$dir"; }
trap cleanup EXIT
"$here/registry.sh" start "$dir"
export SEGD_REGISTRY_DIR="$dir" SEGD_REGISTRY_URL
SEGD_REGISTRY_URL=$(cat "$dir/url")
"$@"
