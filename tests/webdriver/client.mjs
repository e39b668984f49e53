// A small W3C WebDriver client for the engines Playwright cannot drive here:
// Debian's Firefox ESR (through geckodriver) and WebKitGTK (through
// WebKitWebDriver: "webkit" keeps IndexedDB on disk, "webkit-minibrowser" is
// MiniBrowser's in-memory session), plus Chromium through chromedriver.
// Plain JSON over HTTP with Node's fetch; no package, nothing downloaded.
//
//   const browser = await launch("firefox");
//   const tab = await browser.open(`${url}/tests/e2e/blank.html`); // first tab
//   const other = await browser.newTab(`${url}/tests/e2e/blank.html`);
//   await tab.run(async () => { await loadEventStore(); });         // runs in the page
//   await browser.close();                                          // session, driver, browser, Xvfb
//
// Every driver listens on a free 127.0.0.1 port of its own and is started in
// its own process group, so that close() (or the process exiting) ends the
// driver and every browser process it started. Every call is bounded.
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:net";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const FIREFOX_BINARY = process.env.FIREFOX_BINARY ?? "/usr/bin/firefox-esr";
export const MINIBROWSER = process.env.MINIBROWSER ?? "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser";
export const PERSISTENT_WEBKIT = fileURLToPath(new URL("../../scripts/bin/webkit-persistent-browser", import.meta.url));
export const CHROMIUM_BINARY = process.env.CHROMIUM ?? "/usr/bin/chromium";

const which = (name, ...fallbacks) => {
  for (const dir of (process.env.PATH ?? "").split(":").filter(Boolean)) {
    if (existsSync(join(dir, name))) return join(dir, name);
  }
  return fallbacks.find((f) => existsSync(f)) ?? name;
};

/** How each engine's driver is started and which capabilities it gets. */
const ENGINES = {
  firefox: {
    label: "Firefox",
    driver: () => which("geckodriver", join(homedir(), ".cargo/bin/geckodriver")),
    args: (port) => ["--port", String(port), "--host", "127.0.0.1"],
    capabilities: (opts) => ({
      browserName: "firefox",
      "moz:firefoxOptions": { binary: FIREFOX_BINARY, args: ["-headless", ...(opts.firefoxProfile ? ["-profile", opts.firefoxProfile] : [])], prefs: { "browser.shell.checkDefaultBrowser": false, ...opts.firefoxPrefs } },
    }),
  },
  // WebKitGTK with IndexedDB on disk (SQLite, as in Safari and GNOME Web):
  // scripts/bin/webkit-persistent-browser, the same engine as MiniBrowser
  // through its GObject bindings (Debian's gir1.2-webkit2-4.1), on a fresh
  // data directory per session.
  webkit: {
    label: "WebKitGTK",
    needsDisplay: true,
    profile: true,
    driver: () => which("WebKitWebDriver", "/usr/bin/WebKitWebDriver"),
    args: (port) => [`--port=${port}`, "--host=local"],
    capabilities: (opts) => ({
      "webkitgtk:browserOptions": {
        binary: PERSISTENT_WEBKIT,
        args: ["--automation", `--data-dir=${opts.profile}`, ...(opts.webkitFeatures?.length ? [`--features=${opts.webkitFeatures.join(",")}`] : [])],
      },
    }),
  },
  // WebKitGTK's MiniBrowser, which WebKitWebDriver (and wasm-pack --safari)
  // starts by default: its automation session keeps website data in memory,
  // so IndexedDB is WebKit's in-memory backing store.
  "webkit-minibrowser": {
    label: "WebKitGTK MiniBrowser",
    needsDisplay: true,
    driver: () => which("WebKitWebDriver", "/usr/bin/WebKitWebDriver"),
    args: (port) => [`--port=${port}`, "--host=local"],
    capabilities: () => ({ "webkitgtk:browserOptions": { binary: MINIBROWSER, args: ["--automation"] } }),
  },
  chromium: {
    label: "Chromium",
    driver: () => which("chromedriver", "/usr/bin/chromedriver"),
    args: (port) => [`--port=${port}`, "--allowed-ips=127.0.0.1"],
    // chromedriver's own temporary profile is not always removed when it
    // quits: give it one that close() removes.
    profile: true,
    capabilities: (opts) => ({
      browserName: "chrome",
      "goog:chromeOptions": {
        binary: CHROMIUM_BINARY,
        args: [`--user-data-dir=${opts.profile}`, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run"],
      },
    }),
  },
};

/**
 * Starts `fn(...args)` in the tab without waiting for it (a call that may
 * outlast one WebDriver script timeout); {@link finishJob} collects its result.
 */
export const startJob = (tab, fn, args = []) =>
  tab.run((source, args) => {
    const job = { state: "running" };
    window.job = job;
    Promise.resolve()
      .then(() => (0, eval)(`(${source})`)(...args))
      .then((value) => Object.assign(job, { state: "done", value }),
        (e) => Object.assign(job, { state: "failed", error: `${e && e.code ? `[${e.code}] ` : ""}${e && e.message ? e.message : e}` }));
  }, [String(fn), args]);

/** Polls the tab's job until it settles or `deadline` (ms since epoch) passes. */
export async function finishJob(tab, deadline, what) {
  for (;;) {
    const job = await tab.run(() => window.job);
    if (job.state === "done") return job.value;
    if (job.state === "failed") throw new Error(`${what}: ${job.error}`);
    if (Date.now() > deadline) throw new Error(`${what}: not finished in time (state ${job.state})`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

/** Engine names to run, from $ENGINES (comma-separated) or the default list. */
export function enginesFromEnv(fallback = ["firefox", "webkit"]) {
  const list = (process.env.ENGINES ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  for (const e of list) if (!ENGINES[e]) throw new Error(`ENGINES: unknown engine ${e} (known: ${Object.keys(ENGINES).join(", ")})`);
  return list.length ? list : fallback;
}

let names = 0;
/** A database name no earlier test of this process used. */
export const uniqueName = (prefix) => `${prefix}-${Date.now().toString(36)}-${++names}`;

/** The installed version of a Debian package, or null. */
export function debianVersion(pkg) {
  try {
    return execFileSync("dpkg-query", ["-W", "-f=${Version}", pkg], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim() || null;
  } catch {
    return null;
  }
}

const freePort = () =>
  new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// Process groups started here, ended when the process exits whatever happened.
const groups = new Set();
const killGroup = (pid, signal) => {
  try {
    process.kill(-pid, signal);
  } catch {
    /* already gone */
  }
};
process.once("exit", () => { for (const pid of groups) killGroup(pid, "SIGKILL"); });

/** Starts `cmd` in a process group of its own; keeps the last 20 kB of its output. */
function startProcess(cmd, args, extra = {}) {
  const child = spawn(cmd, args, { detached: true, stdio: ["ignore", "pipe", "pipe", ...(extra.stdio ?? [])], env: extra.env ?? process.env });
  groups.add(child.pid);
  let output = "";
  const keep = (d) => { output = (output + d).slice(-20_000); };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise((ok) => child.once("exit", (code, signal) => ok({ code, signal })));
  child.once("error", (e) => keep(`\n[spawn error] ${e.message}\n`));
  return {
    child,
    exited,
    output: () => output,
    /** Ends the whole group: SIGTERM, then SIGKILL after `graceMs`. */
    async stop(graceMs = 3000) {
      if (child.exitCode === null && child.signalCode === null) {
        killGroup(child.pid, "SIGTERM");
        await Promise.race([exited, sleep(graceMs)]);
      }
      killGroup(child.pid, "SIGKILL"); // what the leader left behind in its group
      groups.delete(child.pid);
    },
  };
}

/** Starts Xvfb on a free display number; resolves to { display, stop }. */
async function startXvfb() {
  const x = startProcess("Xvfb", ["-displayfd", "3", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"], { stdio: ["pipe"] });
  let text = "";
  const display = await Promise.race([
    new Promise((ok) => x.child.stdio[3].on("data", (d) => { text += d; if (text.includes("\n")) ok(`:${text.trim()}`); })),
    x.exited.then(() => { throw new Error(`Xvfb exited: ${x.output()}`); }),
    sleep(15_000).then(() => { throw new Error("Xvfb did not report a display within 15 s"); }),
  ]).catch(async (e) => { await x.stop(); throw e; });
  return { display, stop: () => x.stop() };
}

/** A WebDriver error, with the driver's `error` code and message. */
export class WebDriverError extends Error {}

/** One WebDriver HTTP call, bounded by `timeoutMs`; resolves to the response's `value`. */
async function call(base, method, path, body, timeoutMs = 30_000) {
  let res;
  try {
    res = await fetch(`${base}${path}`, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    throw new WebDriverError(`${method} ${path}: ${e.name === "TimeoutError" ? `no answer within ${timeoutMs / 1000} s` : e.message}`);
  }
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    throw new WebDriverError(`${method} ${path}: HTTP ${res.status}, not JSON: ${text.slice(0, 300)}`);
  }
  const value = json?.value;
  if (!res.ok || (value && typeof value === "object" && typeof value.error === "string")) {
    const msg = value?.message ?? text.slice(0, 300);
    throw Object.assign(new WebDriverError(`${method} ${path}: ${value?.error ?? res.status}: ${msg}`), { error: value?.error });
  }
  return value;
}

// The page side of `run`: calls the function with the arguments and reports
// { ok: value } or { err: {...} } through the async script's callback.
const RUNNER = `
  const done = arguments[arguments.length - 1];
  const [source, args] = arguments;
  const describe = (e) => (e !== null && typeof e === "object"
    ? { name: e.name, code: e.code, message: String(e.message), stack: String(e.stack ?? "") }
    : { message: String(e) });
  Promise.resolve().then(() => (0, eval)("(" + source + ")")(...args))
    .then((value) => done({ ok: value === undefined ? null : value }), (e) => done({ err: describe(e) }));`;

/** An error thrown in a page, rebuilt in Node with the page's name, code and stack. */
export class PageError extends Error {}

/** One top-level browsing context (a tab) of a session. */
class Tab {
  constructor(browser, handle) {
    this.browser = browser;
    this.handle = handle;
  }

  /** Makes this tab the session's current one (WebDriver talks to one at a time). */
  async focus() {
    if (this.browser.current !== this.handle) {
      await this.browser.cmd("POST", "/window", { handle: this.handle });
      this.browser.current = this.handle;
    }
  }

  async goto(url) {
    await this.focus();
    await this.browser.cmd("POST", "/url", { url }, 60_000);
  }

  /**
   * Runs `fn` (a function, sent as source: it sees only page globals) with
   * JSON arguments in this tab; resolves to its JSON-able result. A throw in
   * the page rejects with a PageError carrying the page error's code.
   */
  async run(fn, args = [], timeoutMs = 60_000) {
    await this.focus();
    await this.browser.setScriptTimeout(timeoutMs);
    const out = await this.browser.cmd("POST", "/execute/async", { script: RUNNER, args: [String(fn), args] }, timeoutMs + 15_000);
    if (out && out.err) {
      throw Object.assign(new PageError(`${this.browser.label}: ${out.err.code ? `[${out.err.code}] ` : ""}${out.err.message}`), {
        code: out.err.code,
        pageStack: out.err.stack,
      });
    }
    return out?.ok ?? null;
  }

  /** Closes this tab. */
  async close() {
    await this.focus();
    await this.browser.cmd("DELETE", "/window");
    this.browser.current = null;
  }
}

/** A running driver with one session. */
class Browser {
  constructor(engine, base, sessionId, capabilities, parts) {
    this.engine = engine;
    this.label = ENGINES[engine].label;
    this.base = base;
    this.sessionId = sessionId;
    this.capabilities = capabilities;
    this.version = capabilities?.browserVersion ?? capabilities?.version ?? "?";
    this.parts = parts;
    this.current = null;
    this.scriptTimeout = null;
  }

  cmd(method, path, body, timeoutMs) {
    return call(this.base, method, `/session/${this.sessionId}${path}`, body, timeoutMs);
  }

  async setScriptTimeout(ms) {
    if (this.scriptTimeout !== ms) {
      await this.cmd("POST", "/timeouts", { script: ms });
      this.scriptTimeout = ms;
    }
  }

  /** The session's first tab, navigated to `url`. */
  async open(url) {
    const tab = new Tab(this, await this.cmd("GET", "/window"));
    this.current = tab.handle;
    if (url) await tab.goto(url);
    return tab;
  }

  /** A new tab of the same session (same profile, same origin storage), navigated to `url`. */
  async newTab(url, type = "tab") {
    const { handle } = await this.cmd("POST", "/window/new", { type });
    const tab = new Tab(this, handle);
    if (url) await tab.goto(url);
    return tab;
  }

  /** The driver's log (last 20 kB), for failure messages. */
  driverOutput() {
    return this.parts.driver.output();
  }

  /** Ends the session, then the driver's process group (and the browser), then Xvfb. Never throws. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    await call(this.base, "DELETE", `/session/${this.sessionId}`, undefined, 20_000).catch(() => {});
    await this.parts.driver.stop();
    await this.parts.xvfb?.stop();
    await this.parts.removeProfile();
  }
}

/**
 * Starts the engine's driver on a free port (and Xvfb for WebKit when there is
 * no display) and opens a session with a fresh profile. `opts.firefoxPrefs`
 * adds Firefox preferences, `opts.firefoxProfile` a profile directory of the
 * caller's for Firefox (kept after close, for reading its files), `opts.dataDir` the same for
 * WebKitGTK's data directory; `opts.webkitFeatures` (engine "webkit") turns on
 * WebKit features WebKitGTK leaves off (scripts/bin/webkit-persistent-browser).
 */
export async function launch(engine, opts = {}) {
  const spec = ENGINES[engine];
  if (!spec) throw new Error(`unknown engine ${engine}`);
  let xvfb = null;
  const profile = spec.profile ? (opts.dataDir ?? (await mkdtemp(join(tmpdir(), "eventstore-webdriver-")))) : null;
  const removeProfile = () => (profile && !opts.dataDir ? rm(profile, { recursive: true, force: true }).catch(() => {}) : undefined);
  const env = { ...process.env };
  if (spec.needsDisplay && !env.DISPLAY && !env.WAYLAND_DISPLAY) {
    xvfb = await startXvfb();
    env.DISPLAY = xvfb.display;
  }
  const port = await freePort();
  const driver = startProcess(spec.driver(), spec.args(port), { env });
  const base = `http://127.0.0.1:${port}`;
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (driver.child.exitCode !== null || driver.child.signalCode !== null) throw new Error(`${spec.driver()} exited: ${driver.output()}`);
      const ready = await call(base, "GET", "/status", undefined, 2000).then((v) => v?.ready !== false, () => false);
      if (ready) break;
      if (Date.now() > deadline) throw new Error(`${spec.driver()} did not answer on ${base} within 20 s: ${driver.output()}`);
      await sleep(100);
    }
    const capabilities = spec.capabilities({ firefoxPrefs: {}, ...opts, profile });
    const session = await call(base, "POST", "/session", { capabilities: { alwaysMatch: capabilities } }, 90_000);
    return new Browser(engine, base, session.sessionId, session.capabilities, { driver, xvfb, removeProfile });
  } catch (e) {
    await driver.stop();
    await xvfb?.stop();
    await removeProfile();
    throw e;
  }
}
