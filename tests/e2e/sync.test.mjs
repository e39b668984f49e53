// Sync end to end: a real eventstore-server (SQLite in a temp dir, a free port
// on 127.0.0.1, started per test and killed at its end) and browser contexts
// of one Chromium as devices (a context is a device: its own IndexedDB; its
// pages are that device's tabs). What SPEC section 5 and issue 10 ask of the
// client in a browser, including the peers' failures the issue names.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "../../scripts/serve.mjs";
import { buildServer, startSyncServer } from "../../scripts/sync-server.mjs";
import { setup } from "./helpers.mjs";

const TIMEOUT = 120_000;
const EXECUTABLE = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
const STORE = "app";

let web, browser, tmp;
let counter = 0;
before(async () => {
  buildServer({ quiet: true });
  web = await serve();
  browser = await chromium.launch({ executablePath: EXECUTABLE, args: ARGS, timeout: 60_000 });
  tmp = await mkdtemp(join(tmpdir(), "eventstore-sync-e2e-"));
});
after(async () => {
  await browser?.close().catch(() => {});
  await web?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

// ---- the server --------------------------------------------------------------------

/** A fresh sync server for test `t` (its own SQLite file), killed when the test ends. */
async function startServer(t, { auth, file = `sync-${++counter}.db`, origins = [web.url] } = {}) {
  let authFile;
  if (auth) {
    authFile = join(tmp, `auth-${++counter}.json`);
    await writeFile(authFile, JSON.stringify(auth));
  }
  const server = await startSyncServer({ database: `sqlite://${join(tmp, file)}`, origins, auth: authFile });
  server.file = join(tmp, file);
  t.after(async () => {
    await server.kill();
    if (process.env.SYNC_E2E_LOG) console.log(server.log());
  });
  return server;
}

/** Every item of the server's log, pulled with Node's fetch (token optional). */
async function serverLog(server, token) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const items = [];
  let after = 0;
  for (let i = 0; i < 1000; i++) {
    const res = await fetch(`${server.url}/v1/pull?after=${after}&limit=1000`, { headers });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    items.push(...body.items);
    after = body.cursor;
    if (!body.more) return items;
  }
  throw new Error("serverLog: more than 1000 pulls");
}

/** The server's events, checked: every id once, every aggregate's sequences 1..n. */
async function serverEvents(server, token) {
  const events = (await serverLog(server, token)).filter((i) => i.type === "event");
  assertOnceAndGapFree(events, "server");
  return events;
}

function assertOnceAndGapFree(events, where) {
  const ids = new Set();
  const seqs = new Map();
  for (const e of events) {
    assert.ok(!ids.has(e.id), `${where}: event ${e.id} appears twice`);
    ids.add(e.id);
    const agg = [].concat(e.aggregate).join(".");
    const next = (seqs.get(agg) ?? 0) + 1;
    assert.equal(e.sequence, next, `${where}: ${agg} has sequence ${e.sequence} where ${next} was due (position order)`);
    seqs.set(agg, next);
  }
}

// ---- devices -------------------------------------------------------------------------

/** In-page helpers of a device's tab (evaluated after the package is loaded). */
const PAGE_HELPERS = () => {
  window.conflictsSeen = [];
  window.withdrawn = [];
  window.delivered = [];
  /** Opens the store (once per page) and starts syncing with `url`. `answer`: onConflict's answer, or none. */
  window.startSync = async (url, { token, answer, name, open } = {}) => {
    window.store ??= await EventStore.open(name, open);
    const options = { url };
    if (token) options.token = token;
    if (answer) {
      options.onConflict = async (c) => {
        window.conflictsSeen.push({
          aggregate: [].concat(c.aggregate).join("."),
          pending: c.pending.map((e) => e.id),
          remote: c.remote.map((e) => e.id),
        });
        return answer;
      };
    }
    window.sync = window.store.sync(options);
  };
  /** Every event of the store, plain. */
  window.snapshot = async () => (await window.store.filter()).map((e) => ({
    id: e.id, aggregate: e.aggregate.join("."), sequence: e.sequence, action: e.action.join("."),
    revision: e.revision, payload: e.payload, forgotten: e.forgotten, remotePosition: e.remotePosition, position: e.position,
  }));
  /** Pushes `n` events to `aggregate` (one push, one entry). */
  window.pushN = async (aggregate, n, tag = "x") => (await window.store.push([{
    aggregate, commands: Array.from({ length: n }, (_, i) => ({ action: `${aggregate}.happened`, payload: { tag, i, nested: { b: 1, a: [i] } } })),
  }])).map((e) => e.id);
  window.syncStatus = () => {
    const s = window.sync.status();
    return { pending: s.pending, conflicts: s.conflicts, remotePosition: s.remotePosition, online: s.online,
      error: s.error ? { code: s.error.code, message: String(s.error.message), isError: s.error instanceof Error } : null };
  };
  /** flush() bounded by `ms`: null when it resolved, else what it threw. */
  window.flushIn = (ms = 30_000) => errorOf(() => window.sync.flush(), ms);
  /** Subscribes to everything, recording deliveries and withdrawals. */
  window.watch = () => window.store.subscribe(undefined, (e) => window.delivered.push(e.id), {
    onWithdraw: (events) => window.withdrawn.push(...events.map((e) => e.id)),
  });
};

/** A device: a browser context with its own storage. `tab()` opens a page of it with the package loaded. */
async function newDevice(t) {
  const context = await browser.newContext();
  t.after(() => context.close().catch(() => {}));
  const errors = [];
  return {
    context,
    errors,
    async tab() {
      const page = await context.newPage();
      page.setDefaultTimeout(30_000);
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(`${web.url}/tests/e2e/blank.html`);
      await page.evaluate(() => loadEventStore());
      await page.evaluate(PAGE_HELPERS);
      return page;
    },
  };
}

/** A device with one tab syncing with `server`. Returns { device, page }. */
async function syncingDevice(t, server, options = {}) {
  const device = await newDevice(t);
  const page = await device.tab();
  await page.evaluate(([url, o]) => startSync(url, o), [server.url, { name: STORE, ...options }]);
  return { device, page, context: device.context };
}

const flushOk = async (page, ms = 30_000) => {
  const err = await page.evaluate((ms) => flushIn(ms), ms);
  assert.equal(err, null, `flush failed: ${JSON.stringify(err)}; status ${JSON.stringify(await page.evaluate(() => syncStatus()))}`);
};
const snapshot = (page) => page.evaluate(() => snapshot());
const status = (page) => page.evaluate(() => syncStatus());

/** What must be equal across devices: events per aggregate (positions are local, so left out). */
const shared = (events) => events.map(({ position, ...rest }) => rest)
  .sort((a, b) => a.aggregate.localeCompare(b.aggregate) || a.sequence - b.sequence);

/** Checks one device's log: ids once, sequences gap-free, position order agreeing with sequences, all synced. */
function assertDeviceLog(events, where, { synced = true } = {}) {
  assertOnceAndGapFree(events, where);
  for (let i = 1; i < events.length; i++) assert.ok(events[i].position > events[i - 1].position, `${where}: positions not increasing`);
  if (synced) {
    for (const e of events) assert.equal(typeof e.remotePosition, "number", `${where}: ${e.id} has remotePosition ${e.remotePosition}`);
  }
}

/** Every device's log equals the server's, event by event (remotePosition = server position). */
async function assertConverged(server, pages) {
  const remote = await serverEvents(server);
  const want = shared(remote.map((e) => ({
    id: e.id, aggregate: e.aggregate.join("."), sequence: e.sequence, action: e.action.join("."),
    revision: e.revision, payload: e.payload, forgotten: e.forgotten, remotePosition: e.position, position: 0,
  })));
  for (const [i, page] of pages.entries()) {
    const events = await snapshot(page);
    assertDeviceLog(events, `device ${i}`);
    assert.deepEqual(shared(events), want, `device ${i} differs from the server`);
  }
  return remote;
}

/** Waits until `fn` (in the page) is truthy, bounded. */
const until = (page, fn, arg, timeout = 20_000) => page.waitForFunction(fn, arg, { timeout, polling: 100 });

// ---- tests ---------------------------------------------------------------------------

test("two devices converge: same events per aggregate, remotePosition equal, forgotten flags carried", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  const b = await syncingDevice(t, server);
  await a.page.evaluate(() => Promise.all([pushN("user.A", 3, "a"), pushN("user.B", 2, "a")]));
  await b.page.evaluate(() => pushN("user.C", 4, "b"));
  // Forgotten before it was ever synced: travels as forgotten.
  await b.page.evaluate(async () => { await pushN("user.D", 2, "secret-d"); await store.forget({ queries: [{ aggregate: "user.D" }] }); });
  await flushOk(a.page);
  await flushOk(b.page);
  await flushOk(a.page);
  const remote = await assertConverged(server, [a.page, b.page]);
  assert.equal(remote.length, 11, JSON.stringify(remote.map((e) => [e.aggregate.join("."), e.sequence, e.payload?.tag])));
  assert.deepEqual(remote.filter((e) => e.forgotten).map((e) => e.aggregate.join(".")), ["user.D", "user.D"]);
  assert.equal(remote.find((e) => e.aggregate.join(".") === "user.A").payload.nested.a[0], 0);
  // The server's head: the last event, or B's forget of user.D (which erased nothing new there, yet takes a position).
  const { head } = await (await fetch(`${server.url}/v1/info`)).json();
  assert.ok(head >= Math.max(...remote.map((e) => e.position)));
  for (const page of [a.page, b.page]) {
    const s = await status(page);
    assert.deepEqual({ pending: s.pending, conflicts: s.conflicts, error: s.error }, { pending: 0, conflicts: 0, error: null });
    assert.equal(s.remotePosition, head);
  }
  assert.deepEqual([...a.device.errors, ...b.device.errors], []);
});

test("encrypted stores sync plaintext payloads (the server reads them) and keep them sealed at rest; a pulled forget shreds", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server, { open: { encryption: true } });
  const b = await syncingDevice(t, server, { open: { encryption: true } });
  await a.page.evaluate(() => Promise.all([pushN("user.A", 3, "SECRETA"), pushN("user.B", 2, "SECRETB")]));
  await b.page.evaluate(() => pushN("user.C", 2, "SECRETC"));
  await flushOk(a.page);
  await flushOk(b.page);
  await flushOk(a.page);
  const remote = await assertConverged(server, [a.page, b.page]);
  assert.equal(remote.find((e) => e.aggregate.join(".") === "user.A").payload.tag, "SECRETA", "the server holds plaintext");
  // Device B's key of user.A, as its vault file has it.
  const slotA = await b.page.evaluate(async (name) => {
    await import("/tests/e2e/vault-page.js");
    await loadVault();
    const vault = await Vault.open(name);
    const { slot } = (await vault.keysFor(["user.A"])).get("user.A");
    vault.close();
    return { slot, status: (await rawSlot(name, slot)).status };
  }, STORE);
  assert.equal(slotA.status, 1, "live before the forget");
  await a.page.evaluate(() => store.forget({ queries: [{ aggregate: "user.A" }] }));
  await flushOk(a.page);
  await flushOk(b.page);
  await assertConverged(server, [a.page, b.page]);
  const raw = await b.page.evaluate((name) => rawRecords(name), STORE);
  const text = JSON.stringify(raw);
  assert.ok(!/SECRET[ABC]/.test(text), "no plaintext payload in device B's IndexedDB");
  assert.match(text, /sealed/);
  const shredEntry = await b.page.evaluate(() => store.filter({ queries: [{ aggregate: "user.A" }] }).then((es) => es.map((e) => e.forgotten)));
  assert.deepEqual(shredEntry, [true, true, true]);
  const after = await b.page.evaluate(async ({ name, slot }) => {
    const { status, key } = await rawSlot(name, slot);
    return { status, zeros: key === "\0".repeat(32), shredLeft: JSON.stringify(await rawRecords(name)).includes("shred") };
  }, { name: STORE, slot: slotA.slot });
  assert.deepEqual(after, { status: 2, zeros: true, shredLeft: false }, "device B destroyed its key of user.A when it pulled the forget");
  assert.deepEqual([...a.device.errors, ...b.device.errors], []);
});

test("live: a push on one device reaches the other's subscription without flush", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  const b = await syncingDevice(t, server);
  await b.page.evaluate(() => { watch(); });
  const ids = await a.page.evaluate(() => pushN("live.A", 2));
  await until(b.page, (ids) => ids.every((id) => delivered.includes(id)), ids, 15_000);
});

test("a device offline for a while catches up once back online", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  const b = await syncingDevice(t, server);
  await flushOk(b.page);
  await b.context.setOffline(true);
  await a.page.evaluate(async () => { for (let i = 0; i < 10; i++) await pushN(`off.A${i % 3}`, 5, "a"); });
  await flushOk(a.page);
  await b.page.evaluate(() => pushN("off.B", 7, "b"));
  // Offline: flush does not resolve (it may reject).
  const offline = await b.page.evaluate(() => flushIn(3000));
  assert.notEqual(offline, null, "flush resolved while offline");
  await until(b.page, () => syncStatus().online === false, undefined, 10_000);
  assert.equal((await status(b.page)).pending, 7);
  await b.context.setOffline(false);
  await flushOk(b.page, 45_000);
  await flushOk(a.page);
  const remote = await assertConverged(server, [a.page, b.page]);
  assert.equal(remote.length, 57);
  assert.equal((await status(b.page)).online, true);
});

for (const answer of ["rebase", "discard"]) {
  test(`a conflicting push is resolved by onConflict: ${answer}`, { timeout: TIMEOUT }, async (t) => {
    const server = await startServer(t);
    const a = await syncingDevice(t, server);
    const b = await syncingDevice(t, server, { answer });
    await b.page.evaluate(() => watch());
    // B is cut off from the server while both write sequence 1.. of doc.1.
    await b.context.setOffline(true);
    const mine = await b.page.evaluate(() => pushN("doc.1", 2, "from-b"));
    const theirs = await a.page.evaluate(() => pushN("doc.1", 3, "from-a"));
    await flushOk(a.page);
    await b.context.setOffline(false);
    await flushOk(b.page, 45_000);
    await flushOk(a.page);
    const seen = await b.page.evaluate(() => conflictsSeen);
    assert.ok(seen.length >= 1, "onConflict was not called");
    assert.deepEqual(seen[0], { aggregate: "doc.1", pending: mine, remote: theirs });
    const remote = await assertConverged(server, [a.page, b.page]);
    const doc = remote.filter((e) => e.aggregate.join(".") === "doc.1");
    if (answer === "rebase") {
      // B's events keep their ids and payloads, after A's.
      assert.deepEqual(doc.map((e) => e.id), [...theirs, ...mine]);
      assert.deepEqual(doc.map((e) => e.sequence), [1, 2, 3, 4, 5]);
      assert.deepEqual(doc.slice(3).map((e) => e.payload.tag), ["from-b", "from-b"]);
    } else {
      assert.deepEqual(doc.map((e) => e.id), theirs);
      const withdrawn = await b.page.evaluate(() => withdrawn);
      assert.deepEqual([...withdrawn].sort(), [...mine].sort(), "the subscription was not told of the discarded events");
    }
    assert.equal((await status(b.page)).conflicts, 0);
  });
}

test("without onConflict a conflict stays pending and is counted, never dropped", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  const b = await syncingDevice(t, server);
  await b.context.setOffline(true);
  const mine = await b.page.evaluate(() => pushN("doc.2", 2, "from-b"));
  await a.page.evaluate(() => pushN("doc.2", 1, "from-a"));
  await flushOk(a.page);
  await b.context.setOffline(false);
  const err = await b.page.evaluate(() => flushIn(10_000));
  assert.equal(err?.code, "CONFLICT", `flush: ${JSON.stringify(err)}`);
  await until(b.page, () => syncStatus().conflicts === 2, undefined, 20_000);
  const s = await status(b.page);
  assert.equal(s.pending, 2);
  const local = await snapshot(b.page);
  for (const id of mine) assert.ok(local.some((e) => e.id === id && e.remotePosition === null), `pending ${id} missing`);
  assert.ok(!(await serverEvents(server)).some((e) => mine.includes(e.id)));
});

test("a forget reaches the server and the other device, raw IndexedDB included; an offline forget is sent later", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  const b = await syncingDevice(t, server);
  await a.page.evaluate(() => store.push([{ aggregate: "person.1", commands: [
    { action: "person.1.added", payload: { name: "Grace", secret: "PAYLOAD-ONE-4711" } },
    { action: "person.1.moved", payload: { city: "SECRET-CITY-0815" } }] }]));
  await a.page.evaluate(() => pushN("person.2", 1, "kept"));
  await flushOk(a.page);
  await flushOk(b.page);
  assert.ok((await b.page.evaluate(() => rawSearch("PAYLOAD-ONE-4711"))).length > 0, "B never held the payload");
  assert.equal(await a.page.evaluate(() => store.forget({ queries: [{ aggregate: "person.1" }] })), 2);
  await flushOk(a.page);
  const onServer = (await serverEvents(server)).filter((e) => e.aggregate.join(".") === "person.1");
  assert.deepEqual(onServer.map((e) => [e.payload, e.forgotten]), [[null, true], [null, true]]);
  await flushOk(b.page);
  assert.deepEqual(await b.page.evaluate(() => rawSearch("PAYLOAD-ONE-4711")), []);
  assert.deepEqual(await b.page.evaluate(() => rawSearch("SECRET-CITY-0815")), []);
  await assertConverged(server, [a.page, b.page]);

  // A forget made offline on B is sent when B reconnects, and no pull brings the payload back.
  await b.context.setOffline(true);
  assert.equal(await b.page.evaluate(() => store.forget({ queries: [{ aggregate: "person.2" }] })), 1);
  await b.context.setOffline(false);
  await flushOk(b.page, 45_000);
  await flushOk(a.page);
  const remote = await assertConverged(server, [a.page, b.page]);
  assert.ok(remote.every((e) => e.forgotten && e.payload === null));
  assert.deepEqual(await a.page.evaluate(() => rawSearch("kept")), []);
});

test("a push answer dropped after the server committed: every event exactly once", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  const b = await syncingDevice(t, server);
  let dropped = 0;
  // The request reaches the server (which commits), the answer never reaches the page.
  await a.context.route(`${server.url}/v1/push`, async (route) => {
    if (dropped >= 2) return route.continue();
    await route.fetch();
    dropped++;
    await route.abort("connectionreset");
  });
  const ids = await a.page.evaluate(() => pushN("drop.A", 5));
  await flushOk(a.page, 60_000);
  assert.ok(dropped >= 1, "no push answer was dropped");
  await flushOk(b.page);
  const remote = await assertConverged(server, [a.page, b.page]);
  assert.deepEqual(remote.map((e) => e.id), ids);
});

test("the server killed mid-push and restarted: every event exactly once", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  await a.page.evaluate(() => watch());
  let pushes = 0;
  let killed = null;
  a.context.on("request", (req) => {
    if (req.url().endsWith("/v1/push") && req.method() === "POST" && ++pushes === 2 && !killed) killed = server.kill();
  });
  // 2,500 events: at least three pushes of at most 1,000.
  const ids = await a.page.evaluate(async () => {
    const out = [];
    for (let i = 0; i < 5; i++) out.push(...await pushN(`kill.A${i}`, 500));
    return out;
  });
  const flushing = a.page.evaluate(() => flushIn(90_000));
  for (let i = 0; i < 200 && !killed; i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(killed, "no second push was seen");
  await killed;
  await new Promise((r) => setTimeout(r, 1500));
  await server.restart();
  assert.equal(await flushing, null);
  const b = await syncingDevice(t, server);
  await flushOk(b.page, 60_000);
  const remote = await assertConverged(server, [a.page, b.page]);
  assert.equal(remote.length, 2500);
  assert.deepEqual(new Set(remote.map((e) => e.id)), new Set(ids));
});

test("pending events survive a reload and are sent after it", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  await flushOk(a.page);
  await server.stop();
  const ids = await a.page.evaluate(() => pushN("reload.A", 4));
  await until(a.page, () => syncStatus().pending === 4, undefined, 5000);
  await a.page.reload();
  await a.page.evaluate(() => loadEventStore());
  await a.page.evaluate(PAGE_HELPERS);
  await a.page.evaluate(([url, name]) => startSync(url, { name }), [server.url, STORE]);
  await until(a.page, () => syncStatus().pending === 4, undefined, 10_000);
  await server.restart();
  await flushOk(a.page, 60_000);
  assert.deepEqual((await serverEvents(server)).map((e) => e.id), ids);
  assert.equal((await status(a.page)).pending, 0);
});

test("pending events survive a browser restart (a profile on disk) and are sent after it", { timeout: TIMEOUT }, async (t) => {
  const env = await setup(); // a persistent profile, on its own static server
  t.after(() => env.close());
  const server = await startServer(t, { origins: [env.origin] });
  const open = async () => {
    const page = await env.newPage();
    await page.evaluate(PAGE_HELPERS);
    await page.evaluate(([url, name]) => startSync(url, { name }), [server.url, STORE]);
    return page;
  };
  let page = await open();
  await flushOk(page);
  await server.stop();
  const ids = await page.evaluate(() => pushN("restart.A", 3));
  await env.restart();
  await server.restart();
  page = await open();
  await flushOk(page, 60_000);
  assert.deepEqual((await serverEvents(server)).map((e) => e.id), ids);
  const events = await snapshot(page);
  assertDeviceLog(events, "restarted device");
  assert.deepEqual(events.map((e) => e.id), ids);
});

test("an unknown token: flush rejects or status().error is SYNC within seconds, and nothing is pulled", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t, { auth: { tokens: [
    { token: "good", push: [">"], pull: [">"], forget: [">"] },
  ] } });
  const good = await syncingDevice(t, server, { token: "good" });
  await good.page.evaluate(() => pushN("auth.A", 2));
  await flushOk(good.page);
  const bad = await syncingDevice(t, server, { token: "not-a-token" });
  const started = Date.now();
  const err = await bad.page.evaluate(() => flushIn(8000));
  const s = await status(bad.page);
  const code = err?.code ?? s.error?.code;
  assert.equal(code, "SYNC", `flush: ${JSON.stringify(err)}, status: ${JSON.stringify(s)}`);
  assert.ok(Date.now() - started < 8000);
  await until(bad.page, () => syncStatus().error?.code === "SYNC", undefined, 5000);
  assert.match((await status(bad.page)).error.message, /401/);
  assert.deepEqual(await snapshot(bad.page), []);
});

test("a server refusal (403) is not a conflict: SYNC error with the status, event kept pending, onConflict not called", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t, { auth: { tokens: [
    { token: "ada", push: ["user.A", "user.A.>"], pull: [">"], forget: ["user.A"] },
  ] } });
  const a = await syncingDevice(t, server, { token: "ada", answer: "rebase" });
  await a.page.evaluate(() => pushN("user.A", 1));
  await flushOk(a.page);
  const refused = await a.page.evaluate(() => pushN("user.B", 2));
  const err = await a.page.evaluate(() => flushIn(8000));
  await until(a.page, () => syncStatus().error !== null, undefined, 8000);
  const s = await status(a.page);
  assert.equal(err?.code ?? s.error.code, "SYNC", JSON.stringify({ err, s }));
  assert.equal(s.error.code, "SYNC");
  assert.match(s.error.message, /403/);
  assert.equal(s.conflicts, 0);
  // The refused events stay pending (status() is a snapshot the sync loop refreshes).
  await until(a.page, () => syncStatus().pending === 2, undefined, 5000).catch(async () => {
    assert.fail(`status().pending stays ${(await status(a.page)).pending} with 2 refused events pending; status at the error: ${JSON.stringify(s)}`);
  });
  assert.equal((await snapshot(a.page)).filter((e) => e.remotePosition === null).length, 2);
  assert.deepEqual(await a.page.evaluate(() => conflictsSeen), []);
  const remote = await serverEvents(server, "ada");
  assert.ok(!remote.some((e) => refused.includes(e.id)));
});

test("events pushed while a push is in flight are not dropped (rxdb#5571)", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  let release;
  const held = new Promise((r) => { release = r; });
  let inFlight = 0;
  // The first push is answered late: the server has committed, the page waits.
  await a.context.route(`${server.url}/v1/push`, async (route) => {
    const response = await route.fetch();
    if (++inFlight === 1) await held;
    await route.fulfill({ response });
  });
  const first = await a.page.evaluate(() => pushN("flight.A", 3));
  for (let i = 0; i < 100 && inFlight === 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(inFlight, 1, "the first push was not sent on its own");
  const during = await a.page.evaluate(async () => [...await pushN("flight.A", 2), ...await pushN("flight.B", 2)]);
  release();
  await flushOk(a.page);
  const remote = await serverEvents(server);
  assert.deepEqual(remote.map((e) => e.id), [...first, ...during]);
  assert.equal((await status(a.page)).pending, 0);
  const b = await syncingDevice(t, server);
  await flushOk(b.page);
  await assertConverged(server, [a.page, b.page]);
});

test("pull and push at the same time (rxdb#5843): both devices end with every event", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  const b = await syncingDevice(t, server);
  const writer = async (tag) => {
    for (let i = 0; i < 30; i++) {
      await pushN(`busy.${tag}${i % 4}`, 5, tag);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await Promise.all([a.page.evaluate(writer, "a"), b.page.evaluate(writer, "b")]);
  await Promise.all([flushOk(a.page), flushOk(b.page)]);
  await Promise.all([flushOk(a.page), flushOk(b.page)]);
  const remote = await assertConverged(server, [a.page, b.page]);
  assert.equal(remote.length, 300);
});

test("two devices reconnecting at once with stale heads do not deadlock (livestore#1394)", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server, { answer: "rebase" });
  const b = await syncingDevice(t, server, { answer: "rebase" });
  await a.page.evaluate(() => pushN("shared.1", 1, "base"));
  await flushOk(a.page);
  await flushOk(b.page);
  await Promise.all([a.context.setOffline(true), b.context.setOffline(true)]);
  await a.page.evaluate(async () => { await pushN("shared.1", 3, "a"); await pushN("own.A", 2, "a"); });
  await b.page.evaluate(async () => { await pushN("shared.1", 2, "b"); await pushN("own.B", 2, "b"); });
  await Promise.all([a.context.setOffline(false), b.context.setOffline(false)]);
  await Promise.all([flushOk(a.page, 60_000), flushOk(b.page, 60_000)]);
  await Promise.all([flushOk(a.page), flushOk(b.page)]);
  const remote = await assertConverged(server, [a.page, b.page]);
  assert.equal(remote.length, 10);
});

test("pending events of a closed leader tab are sent by another tab (livestore#954)", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const device = await newDevice(t);
  const first = await device.tab();
  await first.evaluate(([url, name]) => startSync(url, { name }), [server.url, STORE]);
  await flushOk(first);
  const second = await device.tab();
  await second.evaluate(([url, name]) => startSync(url, { name }), [server.url, STORE]);
  // The server is away while both tabs write; then the first tab (the leader: it started first) closes.
  await server.stop();
  const ids = [
    ...await first.evaluate(() => pushN("tabs.A", 3, "first")),
    ...await second.evaluate(() => pushN("tabs.B", 2, "second")),
  ];
  await first.close();
  await server.restart();
  await flushOk(second, 60_000);
  assert.deepEqual(new Set((await serverEvents(server)).map((e) => e.id)), new Set(ids));
  assert.equal((await status(second)).pending, 0);
});

test("several tabs of one device: one tab does the network work, every tab sees pulled events", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const device = await newDevice(t);
  const tabs = [];
  for (let i = 0; i < 3; i++) {
    const page = await device.tab();
    await page.evaluate(([url, name]) => startSync(url, { name }), [server.url, STORE]);
    await page.evaluate(() => watch());
    tabs.push(page);
  }
  const requests = new Map(); // page index -> sync requests
  tabs.forEach((page, i) => page.on("request", (req) => {
    if (req.url().startsWith(server.url)) requests.set(i, (requests.get(i) ?? 0) + 1);
  }));
  let total = 0;
  device.context.on("request", (req) => { if (req.url().startsWith(server.url)) total++; });
  const other = await syncingDevice(t, server);
  const ids = await other.page.evaluate(async () => [...await pushN("many.A", 3), ...await pushN("many.B", 2)]);
  await flushOk(other.page);
  for (const page of tabs) await until(page, (ids) => ids.every((id) => delivered.includes(id)), ids, 20_000);
  await new Promise((r) => setTimeout(r, 2000));
  const busy = [...requests.entries()].filter(([, n]) => n > 0).map(([i]) => i);
  assert.equal(busy.length, 1, `tabs ${busy.join(", ")} all sent requests to the server: ${JSON.stringify([...requests])}`);
  assert.ok(total < 30, `${total} requests from one idle device in a few seconds`);
  for (const page of tabs) {
    const events = await snapshot(page);
    assert.deepEqual(new Set(events.map((e) => e.id)), new Set(ids));
  }
});

test("a server whose database was replaced is detected (LOG_MISMATCH), never mixed", { timeout: TIMEOUT }, async (t) => {
  const server = await startServer(t);
  const a = await syncingDevice(t, server);
  await a.page.evaluate(() => pushN("old.A", 3));
  await flushOk(a.page);
  await server.stop();
  for (const suffix of ["", "-wal", "-shm"]) await rm(server.file + suffix, { force: true });
  await server.restart();
  const fresh = await syncingDevice(t, server);
  await fresh.page.evaluate(() => pushN("new.B", 2));
  await flushOk(fresh.page);
  await a.page.evaluate(() => pushN("old.A", 1));
  const err = await a.page.evaluate(() => flushIn(10_000));
  await until(a.page, () => syncStatus().error !== null, undefined, 15_000);
  const s = await status(a.page);
  assert.notEqual(err, null, "flush resolved against another log");
  assert.equal(s.error.code, "SYNC", JSON.stringify(s.error));
  assert.match(s.error.message, /LOG_MISMATCH/, JSON.stringify(s.error));
  if (err.code !== "TIMEOUT" && err.code !== undefined) assert.equal(err.code, "SYNC", JSON.stringify(err));
  // Never mixed: nothing of the old log reached the new one, nothing of the new one reached the device.
  assert.deepEqual((await serverEvents(server)).map((e) => e.aggregate.join(".")), ["new.B", "new.B"]);
  const local = await snapshot(a.page);
  assert.ok(!local.some((e) => e.aggregate === "new.B"), "the device pulled events of another log");
  assert.equal(local.length, 4);
});
