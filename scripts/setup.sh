#!/usr/bin/env bash
# Installs what building and testing eventstore-wasm needs on a fresh Debian
# machine, skipping whatever is already there. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$want" != "$have" ]; then
  log "installing wasm-bindgen-cli $want (found '${have:-none}')"
  cargo install wasm-bindgen-cli --version "$want" --force
fi

if ! command -v wasm-pack >/dev/null 2>&1; then
  log "installing wasm-pack"
  cargo install wasm-pack
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  log "installing Debian's chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# PostgreSQL and nats-server for the sync server's tests (they start a
# throwaway cluster with initdb/pg_ctl as the postgres user, and a
# nats-server, on 127.0.0.1; SQLite needs nothing).
sync_missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || sync_missing+=(postgresql)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || sync_missing+=(nats-server)
if [ ${#sync_missing[@]} -gt 0 ]; then
  log "installing Debian's ${sync_missing[*]} (for the sync server's tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${sync_missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund
fi
log "ready"
