// A real full disk in Firefox (issue 8), as tests/e2e/diskfull.test.mjs does
// in Chromium: Firefox ESR's profile on a 40 MB tmpfs, through geckodriver
// (plain W3C WebDriver; Playwright cannot drive Debian's Firefox). The
// filler is written after Firefox started, so that its quota (computed from
// the free space at start) is larger than what is left and the disk fills
// first. Skipped with a message without root (mount) or without geckodriver.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "../../scripts/serve.mjs";

const FIREFOX = process.env.FIREFOX_BINARY ?? "/usr/bin/firefox-esr";
const GECKODRIVER = [join(homedir(), ".cargo/bin/geckodriver"), "/usr/bin/geckodriver", "/usr/local/bin/geckodriver"].find(existsSync);
const MAX_PUSHES = 800;

let dir, mounted = false, skip = "", server, driver;

before(async () => {
  if (!GECKODRIVER || !existsSync(FIREFOX)) {
    skip = `needs geckodriver and ${FIREFOX} (bash scripts/setup.sh installs them)`;
    return;
  }
  dir = await mkdtemp(join(tmpdir(), "eventstore-diskfull-ff-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=40m", "tmpfs", dir], { stdio: "pipe" });
    mounted = true;
  } catch (e) {
    skip = `cannot mount a tmpfs here (${String(e.stderr || e.message).trim()}): run as root to test a full disk`;
    return;
  }
  await mkdir(join(dir, "profile"));
  server = await serve();
});

after(async () => {
  await driver?.close();
  await server?.close();
  if (mounted) execFileSync("umount", ["-l", dir]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

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

/** geckodriver and a Firefox session on `profile`; `run(fn, arg)` runs fn in the page. */
async function firefox(profile) {
  const port = await freePort();
  const child = spawn(GECKODRIVER, ["--port", String(port), "--host", "127.0.0.1"], { detached: true, stdio: "ignore" });
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
      capabilities: { alwaysMatch: { browserName: "firefox", "moz:firefoxOptions": { binary: FIREFOX, args: ["-headless", "-profile", profile] } } },
    }, 90_000);
    const s = `/session/${session.sessionId}`;
    await call(base, "POST", `${s}/timeouts`, { script: 400_000 });
    return {
      version: session.capabilities.browserVersion,
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

async function page() {
  driver = await firefox(join(dir, "profile"));
  await driver.goto(`${server.url}/tests/e2e/blank.html`);
  await driver.run(async () => { await loadEventStore(); });
  return driver;
}

test("a full disk in Firefox: QUOTA_EXCEEDED, later calls never STORAGE, then what open finds", { timeout: 600_000 }, async (t) => {
  if (skip) return t.skip(skip);
  let ff = await page();
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
  t.diagnostic(`Firefox ${ff.version}, full disk: ${JSON.stringify(filled)}`);
  assert.ok(filled.failure, `a push failed within ${MAX_PUSHES} pushes`);
  assert.equal(filled.failure.code, "QUOTA_EXCEEDED", JSON.stringify(filled.failure));
  for (const e of filled.later) if (e) assert.ok(["CLOSED", "QUOTA_EXCEEDED"].includes(e.code), JSON.stringify(e));

  await rm(join(dir, "filler"));
  await ff.close();
  ff = await page();
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
});
