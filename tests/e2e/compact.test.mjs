// store.compact() (issue 11): what a forget and a compaction leave in the
// files of a Chromium profile, read byte by byte (tests/e2e/disk.mjs, which
// also decompresses LevelDB's table blocks), and that a compaction loses
// nothing, even when the tab running it goes away half way.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, TIMEOUT } from "./helpers.mjs";
import { scanProfile, found, listFiles, describeHits } from "./disk.mjs";
import { readFile } from "node:fs/promises";

/** Prints the IndexedDB LevelDB's own log files (LEVELDB_LOG=1). */
async function printLogs(dir) {
  for (const f of await listFiles(dir)) if (/indexeddb\.leveldb\/LOG/.test(f)) console.log(f, "\n" + (await readFile(f, "utf8")));
}

let env;
before(async () => {
  env = await setup();
});
after(() => env?.close());

/** Pushes `n` events of aggregates `user.<prefix><i>`, each payload holding a fresh marker; returns the markers. */
const pushMarked = (page, prefix, n, { wide = false, big = false } = {}) =>
  page.evaluate(
    async ({ prefix, n, wide, big }) => {
      const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
      const rand = () => Array.from(crypto.getRandomValues(new Uint8Array(32)), (x) => abc[x % 62]).join("");
      const markers = [];
      for (let i = 0; i < n; i++) {
        const marker = rand();
        markers.push(marker);
        // "€" makes V8 keep the whole events text as UTF-16. With `big`,
        // the first event's payload is 100 kB of random text (Chromium keeps
        // it as a blob file) and the second's 100 kB of one letter
        // (Chromium compresses it, the marker stays a literal).
        const email = `${marker}@example.com${wide && i % 2 === 0 && !(big && i < 2) ? " €" : ""}`;
        const payload =
          big && i === 0 ? { email, photo: Array.from({ length: 3125 }, rand).join("") }
          : big && i === 1 ? { email, photo: "x".repeat(100_000) }
          : { email, note: "n".repeat(200) };
        await store.push([{ aggregate: `user.${prefix}${i}`, commands: [{ action: `user.${prefix}${i}.added`, payload }] }]);
      }
      return markers;
    },
    { prefix, n, wide, big },
  );

test("on disk: forget leaves the payloads in LevelDB's files; after compact() no file holds them", { timeout: TIMEOUT * 3 }, async () => {
  const name = uniqueName("compact-disk");
  // The profile scanned with the browser closed, then started again (also
  // when the scan fails, so that a failure here does not fail later tests).
  const scanned = async (markers, { logs = false } = {}) => {
    await env.stop();
    try {
      if (logs) await printLogs(env.dir);
      return await scanProfile(env.dir, markers);
    } finally {
      await env.start();
    }
  };
  let page = await env.newPage();
  await page.evaluate((name) => EventStore.open(name).then((s) => { window.store = s; }), name);
  const forgotten = await pushMarked(page, "F", 20, { wide: true, big: true });
  const kept = await pushMarked(page, "K", 20, { wide: true, big: true });
  const all = [...forgotten, ...kept];
  // Some history around them, as a store in use has.
  await page.evaluate(async () => {
    for (let i = 0; i < 50; i++) await store.push([{ aggregate: `order.${i}`, commands: [{ action: `order.${i}.placed`, payload: { total: i } }] }]);
  });
  await page.evaluate(() => store.close());
  const control = await scanned(all);
  console.log(`before forget: ${describeHits(control, all)}`);
  assert.deepEqual(found(control, all), all, "control: the scan finds every marker before the forget");

  page = await env.newPage();
  const erased = await page.evaluate(async (name) => {
    window.store = await EventStore.open(name);
    const n = await store.forget({ queries: Array.from({ length: 20 }, (_, i) => ({ aggregate: `user.F${i}` })) });
    store.close();
    return n;
  }, name);
  assert.equal(erased, 20);
  const afterForget = await scanned(all);
  console.log(`after forget (kept: ${describeHits(afterForget, kept)}); forgotten: ${describeHits(afterForget, forgotten)}`);
  assert.deepEqual(found(afterForget, kept), kept, "the kept markers are on disk");
  // The payload Chromium kept as a blob file went with that file; every
  // other forgotten payload is still in LevelDB's log.
  assert.deepEqual(found(afterForget, forgotten), forgotten.slice(1), "forget alone leaves the forgotten payloads kept inside LevelDB in its files");

  page = await env.newPage();
  const r = await page.evaluate(async (name) => {
    const store = await EventStore.open(name);
    const before = await store.filter({});
    const t0 = performance.now();
    const again = await store.compact();
    const ms = performance.now() - t0;
    const oldStore = await errorOf(() => store.count());
    const afterEvents = await again.filter({});
    const pushed = await again.push([{ aggregate: "user.Z", commands: [{ action: "user.Z.added", payload: {} }] }]);
    again.close();
    return { before, afterEvents, ms, oldStore, position: pushed[0].position, databases: await rawDatabases() };
  }, name);
  console.log(`compact() of ${r.before.length} events took ${r.ms.toFixed(0)} ms`);
  assert.deepEqual(r.afterEvents, r.before, "compact keeps every event as it was");
  assert.equal(r.oldStore?.code, "CLOSED", "the store compact() was called on is closed");
  assert.equal(r.position, r.before.length + 1, "the reopened store appends after the log");
  assert.deepEqual(Object.keys(r.databases).filter((d) => d.includes(name)), [name], "no holding database is left");
  const afterCompact = await scanned(all, { logs: !!process.env.LEVELDB_LOG });
  console.log(`after compact (kept: ${describeHits(afterCompact, kept)}); forgotten: ${describeHits(afterCompact, forgotten)}`);
  assert.deepEqual(found(afterCompact, kept), kept, "after compact, the kept markers are on disk");
  assert.deepEqual(found(afterCompact, forgotten), [], "after compact (browser closed), no file holds a forgotten marker");
  page = await env.newPage();
  assert.equal(await page.evaluate(async (name) => (await EventStore.open(name)).count(), name), 91);
  await page.close();
  const afterRestart = await scanned(all);
  console.log(`after compact and a restart (kept: ${describeHits(afterRestart, kept)}); forgotten: ${describeHits(afterRestart, forgotten)}`);
  assert.deepEqual(found(afterRestart, kept), kept, "the kept markers are still on disk");
  assert.deepEqual(found(afterRestart, forgotten), [], "after compact and a restart, no file holds a forgotten marker");
});

/** Every object store's schema and records of database `name`, raw. */
const rawDump = (page, name) =>
  page.evaluate(async (name) => {
    const records = await rawRecords(name);
    const db = await new Promise((ok, fail) => {
      const r = indexedDB.open(name);
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    const tx = db.transaction([...db.objectStoreNames]);
    const schema = [...db.objectStoreNames].map((s) => {
      const o = tx.objectStore(s);
      return [s, o.keyPath, o.autoIncrement, [...o.indexNames].map((i) => [i, o.index(i).keyPath, o.index(i).unique, o.index(i).multiEntry])];
    });
    const version = db.version;
    db.close();
    return { version, schema, records };
  }, name);

test("compact keeps every record, index and the sync state; other tabs' stores close; a compaction cut short is finished or undone by the next open", { timeout: TIMEOUT * 2 }, async () => {
  const name = uniqueName("compact-safe");
  const page = await env.newPage();
  const other = await env.newPage();
  await page.evaluate(async (name) => {
    window.store = await EventStore.open(name);
    for (let i = 0; i < 30; i++) {
      await store.push([{ aggregate: `user.${i % 7}`, commands: [{ action: `user.${i % 7}.added`, payload: { i } }, { action: "audit.noted", payload: { i } }] }]);
    }
    await store.forget({ queries: [{ aggregate: "user.3" }] });
    // A sync state as sync() keeps it: it must survive untouched.
    const db = await new Promise((ok) => { const r = indexedDB.open(name); r.onsuccess = () => ok(r.result); });
    await new Promise((ok) => { const tx = db.transaction("sync", "readwrite"); tx.objectStore("sync").put('{"log":"L","cursor":7}', "state"); tx.oncomplete = ok; });
    db.close();
    // The records as they stay: once the background fold has caught up
    // (it would otherwise fold some between this dump and the next).
    await untilFolded(name);
  }, name);
  const before = await rawDump(page, name);
  await other.evaluate(async (name) => {
    window.store = await EventStore.open(name);
  }, name);

  // The whole compaction: same records, indexes and version; the other tab's store is closed.
  const r = await page.evaluate(async () => {
    window.store = await store.compact();
    return { count: await store.count(), first: (await store.filter({ limit: 1 }))[0].id };
  });
  assert.equal(r.count, 60);
  assert.deepEqual(await rawDump(page, name), before, "every record, index and the version are as before");
  assert.deepEqual(
    await other.evaluate(async () => (await errorOf(() => store.push([{ aggregate: "x", commands: [{ action: "x.a", payload: 1 }] }])))?.code),
    "CLOSED",
  );
  assert.equal(await other.evaluate(async (name) => (await EventStore.open(name)).count(), name), 60, "the other tab opens it again");

  // Cut short after the copy: the next open drops the holding database, the store is as it was.
  await page.evaluate(async () => {
    store.__compactStop("copied");
    await store.compact().catch(() => {});
  });
  assert.ok(Object.keys(await page.evaluate(() => rawDatabases())).includes(`${name}#eventstore-wasm-compact`), "the holding database is there");
  assert.equal(await page.evaluate(async (name) => { window.store = await EventStore.open(name); return store.count(); }, name), 60);
  assert.deepEqual(await rawDump(page, name), before);
  assert.deepEqual(Object.keys(await page.evaluate(() => rawDatabases())).filter((d) => d.startsWith(name)), [name]);

  // Cut short after the store was deleted: the next open fills it back from the holding database.
  await page.evaluate(async () => {
    store.__compactStop("deleted");
    await store.compact().catch(() => {});
  });
  assert.deepEqual(Object.keys(await page.evaluate(() => rawDatabases())).filter((d) => d.startsWith(name)), [`${name}#eventstore-wasm-compact`], "the store is gone, its copy held");
  // Opened in another tab (the loss marker must agree: no DATA_LOST).
  assert.equal(await other.evaluate(async (name) => { window.store = await EventStore.open(name); return (await store.filter({ limit: 1 }))[0].id; }, name), r.first);
  assert.deepEqual(await rawDump(page, name), before, "filled back as it was");
  assert.deepEqual(Object.keys(await page.evaluate(() => rawDatabases())).filter((d) => d.startsWith(name)), [name]);
  await other.evaluate(() => store.close());
  await page.close();
  await other.close();
});

test("a connection that does not close makes compact() fail after 10 s with STORAGE, the store untouched", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("compact-blocked");
  const page = await env.newPage();
  const raw = await env.newPage();
  await page.evaluate(async (name) => {
    window.store = await EventStore.open(name);
    await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added", payload: { a: 1 } }] }]);
  }, name);
  // Opened without this library: it ignores versionchange.
  await raw.evaluate((name) => new Promise((ok) => { const r = indexedDB.open(name); r.onsuccess = () => { window.db = r.result; ok(); }; }), name);
  const r = await page.evaluate(async () => {
    const t0 = performance.now();
    const error = await errorOf(() => store.compact(), 30_000);
    return { error, ms: performance.now() - t0 };
  });
  assert.equal(r.error?.code, "STORAGE", JSON.stringify(r.error));
  assert.match(r.error.message, /did not close within 10 s/);
  assert.ok(r.ms >= 9_000 && r.ms < 20_000, `${r.ms} ms`);
  await raw.evaluate(() => window.db.close());
  assert.deepEqual(
    await page.evaluate(async (name) => { const s = await EventStore.open(name); const events = await s.filter({}); s.close(); return events.map((e) => e.payload); }, name),
    [{ a: 1 }],
  );
  await page.close();
  await raw.close();
});

test("the copy is layout-agnostic: any object stores, indexes, keys and values come back as they were", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("compact-layout");
  const page = await env.newPage();
  // A database of a later layout (version 9), made with raw IndexedDB.
  await page.evaluate(async (name) => {
    const db = await new Promise((ok, fail) => {
      const r = indexedDB.open(name, 9);
      r.onupgradeneeded = () => {
        const d = r.result;
        const a = d.createObjectStore("batches", { keyPath: "lastPosition" });
        a.createIndex("aggregate", ["aggregate", "lastSequence"], { unique: true });
        a.createIndex("tags", "tags", { multiEntry: true });
        d.createObjectStore("counter", { autoIncrement: true });
        d.createObjectStore("sync");
        d.createObjectStore("unfolded", { keyPath: ["aggregate", "n"] });
      };
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
    const tx = db.transaction(["batches", "counter", "sync", "unfolded"], "readwrite");
    for (let i = 1; i <= 600; i++) tx.objectStore("batches").put({ lastPosition: i, aggregate: `a.${i % 5}`, lastSequence: i, tags: [`t${i % 3}`, "all"], events: "é€".repeat(i % 7) });
    for (let i = 0; i < 3; i++) tx.objectStore("counter").put({ i });
    tx.objectStore("sync").put("state text", "state");
    tx.objectStore("sync").put(new Uint8Array([1, 2, 3]), ["binary", 1]);
    tx.objectStore("unfolded").put({ aggregate: "a.1", n: 2, text: "x" });
    await new Promise((ok) => { tx.oncomplete = ok; });
    db.close();
  }, name);
  const before = await rawDump(page, name);
  await page.evaluate(async (name) => {
    const { compact } = await import("/pkg/compact.js");
    await compact({ name, close() {} });
  }, name);
  const after = await rawDump(page, name);
  assert.equal(after.version, 9);
  assert.equal(after.records.length, 606);
  assert.deepEqual(after, before);
  await page.close();
});
