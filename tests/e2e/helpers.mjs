// Shared set-up of the end-to-end tests: a static server on the repo root and
// headless Chromium with a fresh profile (so IndexedDB starts empty). Pages
// open tests/e2e/blank.html, whose in-page helpers are documented there.
import { chromium } from "playwright-core";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve, ROOT } from "../../scripts/serve.mjs";

export { ROOT };

const EXECUTABLE = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** Per-test timeout (ms) for node:test. */
export const TIMEOUT = 90_000;

let counter = 0;
/** A database name no other test uses. */
export const uniqueName = (prefix = "db") => `${prefix}-${Date.now().toString(36)}-${++counter}`;

const launch = (userDataDir, extra = []) =>
  chromium.launchPersistentContext(userDataDir, { executablePath: EXECUTABLE, args: [...ARGS, ...extra], timeout: 60_000 });

/**
 * Starts the server and the browser. Returns
 * { url, origin, context, newPage({ load }), restart(), close() };
 * newPage() opens blank.html and (unless load: false) loads the package,
 * so `EventStore` is a global of the page.
 */
export async function setup({ args = [] } = {}) {
  const server = await serve();
  const userDataDir = await mkdtemp(join(tmpdir(), "eventstore-e2e-"));
  let context = await launch(userDataDir, args);
  return {
    url: server.url,
    origin: new URL(server.url).origin,
    get context() {
      return context;
    },
    async newPage({ load = true } = {}) {
      const page = await context.newPage();
      page.setDefaultTimeout(30_000);
      await page.goto(`${server.url}/tests/e2e/blank.html`);
      if (load) await page.evaluate(() => loadEventStore());
      return page;
    },
    /** Closes the browser and starts it again on the same profile. */
    async restart() {
      await context.close();
      context = await launch(userDataDir, args);
    },
    async close() {
      await context.close().catch(() => {});
      await server.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Opens the event store `name` in the page as `window.store` (the package must be loaded). */
export const openStore = (page, name) => page.evaluate(async (name) => { window.store = await EventStore.open(name); }, name);

/** Runs `fn` (a function source using page globals such as `store`) in the page; see errorOf in blank.html. */
export const errorIn = (page, fn) => page.evaluate(`errorOf(${fn})`);
