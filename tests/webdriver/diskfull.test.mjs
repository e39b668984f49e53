// A real full disk in Firefox and WebKit (issue 8), as
// tests/e2e/diskfull.test.mjs does in Chromium: the browser's profile on a
// 40 MB tmpfs, through plain W3C WebDriver (Playwright cannot drive Debian's
// Firefox or WebKitGTK): geckodriver with `-profile DIR`, WebKitWebDriver
// with scripts/bin/webkit-persistent-browser `--data-dir=DIR` under a Xvfb
// of its own. The filler is written after the browser started, so that its
// quota (computed from the free space at start) is larger than what is left
// and the disk fills first. Each engine is skipped with a message when its
// driver or browser is missing, or without root (mount).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { serve } from "../../scripts/serve.mjs";

const FIREFOX = process.env.FIREFOX_BINARY ?? "/usr/bin/firefox-esr";
const GECKODRIVER = [join(homedir(), ".cargo/bin/geckodriver"), "/usr/bin/geckodriver", "/usr/local/bin/geckodriver"].find(existsSync);
const WEBKITDRIVER = "/usr/bin/WebKitWebDriver";
const WEBKIT = fileURLToPath(new URL("../../scripts/bin/webkit-persistent-browser", import.meta.url));
const MAX_PUSHES = 800;

/** How each engine's driver starts and what its session is given. */
const ENGINES = {
  firefox: {
    driver: GECKODRIVER,
    missing: !GECKODRIVER || !existsSync(FIREFOX) ? `needs geckodriver and ${FIREFOX} (bash scripts/setup.sh installs them)` : "",
    args: (port) => ["--port", String(port), "--host", "127.0.0.1"],
    capabilities: (profile) => ({ browserName: "firefox", "moz:firefoxOptions": { binary: FIREFOX, args: ["-headless", "-profile", profile] } }),
  },
  webkit: {
    driver: WEBKITDRIVER,
    display: true,
    missing: !existsSync(WEBKITDRIVER) || !existsSync("/usr/bin/Xvfb") ? "needs WebKitWebDriver and Xvfb (bash scripts/setup.sh installs them)" : "",
    args: (port) => [`--port=${port}`, "--host=local"],
    capabilities: (profile) => ({ "webkitgtk:browserOptions": { binary: WEBKIT, args: ["--automation", `--data-dir=${profile}`] } }),
  },
};

let server, driver, xvfb;
const mounts = [];

before(async () => {
  server = await serve();
});

after(async () => {
  await driver?.close();
  if (xvfb) try { process.kill(-xvfb.pid, "SIGTERM"); } catch {}
  await server?.close();
  for (const dir of mounts) {
    execFileSync("umount", ["-l", dir]);
    await rm(dir, { recursive: true, force: true });
  }
});

/** A fresh 40 MB tmpfs with a profile directory; a reason to skip if mount is refused. */
async function smallDisk() {
  const dir = await mkdtemp(join(tmpdir(), "eventstore-diskfull-wd-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=40m", "tmpfs", dir], { stdio: "pipe" });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    return { skip: `cannot mount a tmpfs here (${String(e.stderr || e.message).trim()}): run as root to test a full disk` };
  }
  mounts.push(dir);
  await mkdir(join(dir, "profile"));
  return { dir };
}

/** A display for WebKit: an Xvfb of this test's own, in its own process group. */
async function display() {
  if (!xvfb) {
    const number = 200 + Math.floor(Math.random() * 500);
    xvfb = spawn("Xvfb", [`:${number}`, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"], { detached: true, stdio: "ignore" });
    xvfb.display = `:${number}`;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return xvfb.display;
}

const freePort = () =>
  new Promise((ok, fail) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on("error", fail);
  });

async function call(base, method, path, body, ms = 60_000) {
  const res = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(ms),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${JSON.stringify(json.value ?? json)}`);
  return json.value;
}

/** The engine's driver and a session on `profile`; `run(fn, arg)` runs fn in the page. */
async function browser(engine, profile) {
  const spec = ENGINES[engine];
  const port = await freePort();
  const env = { ...process.env };
  if (spec.display) env.DISPLAY = await display();
  const child = spawn(spec.driver, spec.args(port), { detached: true, stdio: "ignore", env });
  const base = `http://127.0.0.1:${port}`;
  const stop = () => {
    try { process.kill(-child.pid, "SIGTERM"); } catch {}
  };
  try {
    for (let i = 0; ; i++) {
      if (await call(base, "GET", "/status", undefined, 2000).then((v) => v?.ready !== false, () => false)) break;
      if (i > 100) throw new Error("geckodriver did not start");
      await new Promise((r) => setTimeout(r, 100));
    }
    const session = await call(base, "POST", "/session", {
      capabilities: { alwaysMatch: spec.capabilities(profile) },
    }, 90_000);
    const s = `/session/${session.sessionId}`;
    await call(base, "POST", `${s}/timeouts`, { script: 400_000 });
    return {
      version: `${session.capabilities.browserName} ${session.capabilities.browserVersion}`,
      goto: (url) => call(base, "POST", `${s}/url`, { url }),
      async run(fn, arg) {
        const script = `const done = arguments[arguments.length - 1];
          Promise.resolve().then(() => (${fn})(arguments[0])).then((ok) => done({ ok }), (e) => done({ err: String(e && e.stack || e) }));`;
        const out = await call(base, "POST", `${s}/execute/async`, { script, args: [arg] }, 420_000);
        if (out.err) throw new Error(out.err);
        return out.ok;
      },
      async close() {
        await call(base, "DELETE", s, undefined, 20_000).catch(() => {});
        stop();
      },
    };
  } catch (e) {
    stop();
    throw e;
  }
}

async function page(engine, dir) {
  driver = await browser(engine, join(dir, "profile"));
  await driver.goto(`${server.url}/tests/e2e/blank.html`);
  await driver.run(async () => { await loadEventStore(); });
  return driver;
}

/** $ENGINES (comma-separated), as scripts/test.sh sets it; unset: both. */
const WANTED = (process.env.ENGINES ?? "").split(",").map((e) => e.trim()).filter(Boolean);

async function fillTheDisk(t, engine) {
  if (WANTED.length && !WANTED.includes(engine)) return t.skip(`not in ENGINES=${process.env.ENGINES}`);
  if (ENGINES[engine].missing) return t.skip(ENGINES[engine].missing);
  const { dir, skip } = await smallDisk();
  if (skip) return t.skip(skip);
  let ff = await page(engine, dir);
  // Fill the disk behind Firefox's back, leaving ~8 MB.
  const free = Number(execFileSync("df", ["--output=avail", "-B1", dir]).toString().split("\n")[1]);
  await writeFile(join(dir, "filler"), Buffer.alloc(Math.max(0, free - (8 << 20)), 1));
  const filled = await ff.run(async (max) => {
    const describe = (e) => ({ code: e?.code, name: e?.name, message: String(e?.message ?? e) });
    const payload = () => {
      const bytes = new Uint8Array(15_000);
      crypto.getRandomValues(bytes);
      let s = "";
      for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
      return btoa(s);
    };
    window.store = await EventStore.open("full");
    let pushes = 0, failure = null;
    while (pushes < max) {
      const entry = { aggregate: "fill.A", commands: Array.from({ length: 5 }, () => ({ action: "fill.A.added", payload: payload() })) };
      try {
        await withTimeout(store.push([entry]), 30_000, `push ${pushes + 1}`);
        pushes++;
      } catch (e) {
        failure = describe(e);
        break;
      }
    }
    const later = [];
    for (const call of [
      () => store.push([{ aggregate: "fill.B", commands: [{ action: "fill.B.added" }] }]),
      () => store.filter({ limit: 1 }),
    ]) {
      try { await withTimeout(call(), 20_000, String(call)); later.push(null); } catch (e) { later.push(describe(e)); }
    }
    return { pushes, events: pushes * 5, failure, later };
  }, MAX_PUSHES);
  t.diagnostic(`${ff.version}, full disk: ${JSON.stringify(filled)}`);
  assert.ok(filled.failure, `a push failed within ${MAX_PUSHES} pushes`);
  assert.equal(filled.failure.code, "QUOTA_EXCEEDED", JSON.stringify(filled.failure));
  for (const e of filled.later) if (e) assert.ok(["CLOSED", "QUOTA_EXCEEDED"].includes(e.code), JSON.stringify(e));

  await rm(join(dir, "filler"));
  await ff.close();
  ff = await page(engine, dir);
  const reopened = await ff.run(async () => {
    const describe = (e) => ({ code: e?.code, message: String(e?.message ?? e), lastPosition: e?.lastPosition, position: e?.position });
    try {
      const s = await EventStore.open("full");
      const events = (await s.filter({ queries: [{ aggregate: "fill.A" }] })).length;
      s.close();
      return { events };
    } catch (e) {
      return describe(e);
    }
  });
  t.diagnostic(`after restart: ${JSON.stringify(reopened)}`);
  if (reopened.code !== undefined) assert.equal(reopened.code, "DATA_LOST", JSON.stringify(reopened));
  else assert.equal(reopened.events, filled.events, "the accepted pushes, not the failed one");
  await ff.close();
  driver = undefined;
}

test("a full disk in Firefox: QUOTA_EXCEEDED, later calls never STORAGE, then what open finds", { timeout: 600_000 }, (t) => fillTheDisk(t, "firefox"));

test("a full disk in WebKitGTK: the same", { timeout: 600_000 }, (t) => fillTheDisk(t, "webkit"));
