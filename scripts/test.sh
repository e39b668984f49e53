#!/usr/bin/env bash
# Every test layer of eventstore-wasm, after installing what is missing. Each
# step runs even when an earlier one failed; the summary at the end lists the
# failed steps and the exit code is non-zero when there is any.
#
#   bash scripts/test.sh                      everything, in Chromium, Firefox and WebKit
#   ENGINES=firefox bash scripts/test.sh      the browser steps in the listed engines only
#                                             (chromium, firefox, webkit)
#   WEBKIT_BROWSER=minibrowser bash scripts/test.sh   the wasm-pack suite in WebKitGTK's
#                                             MiniBrowser (IndexedDB in memory) instead of
#                                             scripts/bin/webkit-persistent-browser (on disk)
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/scripts/bin:$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh || exit 1

ENGINES=${ENGINES:-chromium,firefox,webkit}
export ENGINES
has_engine() { [[ ",$ENGINES," == *",$1,"* ]]; }

failed=()
passed=()
step() {
  local name=$1
  shift
  printf '\n=== %s ===\n' "$name"
  if "$@"; then passed+=("$name"); else failed+=("$name"); fi
}

# The browser test files: those that configure wasm-bindgen-test (in a window
# or in a worker).
browser_tests=$(grep -l 'wasm_bindgen_test_configure!' tests/*.rs | xargs -n1 basename | sed 's/\.rs$//')

# The wasm-pack suite in one engine, one test file at a time (so that a failure
# in one file does not hide the others). The driver is given
# explicitly, and no other driver variable may leak into the test runner
# (it takes the first of GECKODRIVER, SAFARIDRIVER, CHROMEDRIVER it finds).
wasm_pack_in() {
  local engine=$1 flags=() wrap=() status=0 file
  case $engine in
    chromium) flags=(--chrome --chromedriver /usr/bin/chromedriver) ;;
    firefox) flags=(--firefox --geckodriver "$(command -v geckodriver)") ;;
    webkit)
      # scripts/bin/safaridriver runs WebKitWebDriver, which needs an X display.
      flags=(--safari --safaridriver "$PWD/scripts/bin/safaridriver")
      wrap=(xvfb-run -a) ;;
  esac
  local log
  log=$(mktemp)
  for file in $browser_tests; do
    for attempt in 1 2; do
      echo "--- tests/$file.rs in $engine"
      if env -u GECKODRIVER -u CHROMEDRIVER -u SAFARIDRIVER -u GECKODRIVER_REMOTE -u CHROMEDRIVER_REMOTE -u SAFARIDRIVER_REMOTE \
        WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-120}" \
        timeout 1200 "${wrap[@]}" wasm-pack test --headless --mode no-install "${flags[@]}" -- --test "$file" 2>&1 | tee "$log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
        break
      fi
      # A page that never started its tests (the browser hung loading it,
      # seen now and then with Chromium) is run once more; a test that
      # ran and failed is not.
      if [ "$attempt" -eq 1 ] && grep -q "Failed to detect test as having been run" "$log" && ! grep -q "^test .* FAIL" "$log"; then
        echo "--- tests/$file.rs in $engine: the page did not start its tests; once more"
        continue
      fi
      status=1
      break
    done
  done
  rm -f "$log"
  return $status
}

step "format" cargo fmt --all -- --check
step "clippy (native)" cargo clippy --all-targets -- -D warnings
step "clippy (wasm32)" cargo clippy --target wasm32-unknown-unknown --all-targets -- -D warnings
step "native core (cargo test)" cargo test
step "clippy (sync server)" cargo clippy -p eventstore-server --all-targets -- -D warnings
step "sync server on SQLite, PostgreSQL and NATS (cargo test -p eventstore-server)" cargo test -p eventstore-server

for engine in chromium firefox webkit; do
  has_engine "$engine" && step "IndexedDB in $engine (wasm-pack test: $(echo $browser_tests))" wasm_pack_in "$engine"
done

step "npm package (npm run build)" npm run build
# The end-to-end tests start the server binary themselves; built here, so
# that no test spends its own time limit compiling it.
step "sync server binary (cargo build --profile server)" cargo build --profile server -p eventstore-server
step "TypeScript declarations (tsc --noEmit)" npx tsc -p tests/types/tsconfig.json
step "package, README example, several tabs, the demo, sync against a real server in Chromium (Playwright)" timeout 2400 node --test --test-concurrency=1 tests/e2e/
step "npm package under Node with fake-indexeddb, npm pack (node:test)" node --test --test-concurrency=1 tests/node/
step "several tabs, full disk, compact, sync and the key vault in ${ENGINES//,/, } (W3C WebDriver)" timeout 1200 node --test --test-concurrency=1 tests/webdriver/

printf '\n=== summary ===\n'
for s in "${passed[@]}"; do printf 'pass  %s\n' "$s"; done
for s in "${failed[@]}"; do printf 'FAIL  %s\n' "$s"; done
[ ${#failed[@]} -eq 0 ]
