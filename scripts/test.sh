#!/usr/bin/env bash
# Every test layer of eventstore-wasm, after installing what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh

step() { printf '\n=== %s ===\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --target wasm32-unknown-unknown --all-targets -- -D warnings

step "native core (cargo test)"
cargo test

step "sync server on SQLite and PostgreSQL (cargo test -p eventstore-server)"
cargo clippy -p eventstore-server --all-targets -- -D warnings
cargo test -p eventstore-server

step "IndexedDB in headless Chromium (wasm-pack test)"
CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-120} \
  wasm-pack test --headless --chrome

step "npm package (wasm-pack build)"
npm run build

step "TypeScript declarations (tsc --noEmit)"
npx tsc -p tests/types/tsconfig.json

step "package, README example, several tabs (Playwright)"
node --test --test-concurrency=1 tests/e2e/

step "npm package under Node with fake-indexeddb, npm pack (node:test)"
node --test --test-concurrency=1 tests/node/
