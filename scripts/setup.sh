#!/usr/bin/env bash
# Installs what building and testing eventstore-wasm needs on a fresh Debian
# machine (as root), skipping whatever is already there at the right version.
# Safe to run again.
#
#   bash scripts/setup.sh         everything: build tools, npm packages, and the
#                                 three browsers with their WebDriver servers
#   bash scripts/setup.sh build   only what `npm run build` needs: the wasm32
#                                 target, wasm-bindgen-cli, wasm-pack, npm packages
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-all}
case "$mode" in
  all | build) ;;
  *) echo "usage: bash scripts/setup.sh [build]" >&2; exit 2 ;;
esac

# geckodriver from crates.io, pinned (newest release that builds on this toolchain).
GECKODRIVER_VERSION=0.37.0

log() { printf '[setup] %s\n' "$*"; }
export PATH="$HOME/.cargo/bin:$PATH"

# ---- Rust: target, wasm-bindgen-cli, wasm-pack ------------------------------------

if ! command -v cargo >/dev/null 2>&1; then
  echo "[setup] cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$want" != "$have" ]; then
  log "installing wasm-bindgen-cli $want (found '${have:-none}')"
  # No --locked: one of its locked crates is missing from the registry here.
  cargo install wasm-bindgen-cli --version "$want" --force
fi

if ! command -v wasm-pack >/dev/null 2>&1; then
  log "installing wasm-pack"
  cargo install wasm-pack
fi

# ---- Debian packages (browsers, drivers, a virtual display for WebKit) ----------------

# Waits for a dpkg lock held by another apt process instead of failing.
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }

if [ "$mode" = all ]; then
  # Chromium and its driver; Firefox ESR; WebKitGTK's WebDriver server (with
  # MiniBrowser), the engine's Python bindings for scripts/bin/webkit-persistent-browser
  # (WebKit with IndexedDB on disk); a virtual X display for WebKit.
  missing=()
  for pkg in chromium chromium-driver firefox-esr webkit2gtk-driver gir1.2-webkit2-4.1 python3-gi xvfb xauth; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt_get update -qq
    apt_get install -y -qq "${missing[@]}" >/dev/null
  fi

  have=$(geckodriver --version 2>/dev/null | awk 'NR == 1 { print $2 }' || true)
  if [ "$have" != "$GECKODRIVER_VERSION" ]; then
    log "installing geckodriver $GECKODRIVER_VERSION (found '${have:-none}')"
    cargo install geckodriver --version "$GECKODRIVER_VERSION" --force
  fi
fi

# ---- the sync server's tests ---------------------------------------------------------

# PostgreSQL and nats-server for the sync server's tests (they start a
# throwaway cluster with initdb/pg_ctl as the postgres user, and a
# nats-server, on 127.0.0.1; SQLite needs nothing).
if [ "$mode" = all ]; then
  sync_missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || sync_missing+=(postgresql)
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || sync_missing+=(nats-server)
  if [ ${#sync_missing[@]} -gt 0 ]; then
    log "installing Debian's ${sync_missing[*]} (for the sync server's tests)"
    apt_get update -qq
    apt_get install -y -qq "${sync_missing[@]}" >/dev/null
  fi
fi

# ---- npm packages ----------------------------------------------------------------------

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund
fi
log "ready ($mode)"
