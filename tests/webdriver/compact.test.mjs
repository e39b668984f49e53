// compact() on disk in Firefox ESR and WebKitGTK (IndexedDB in SQLite in
// both), through WebDriver on a profile directory of the test's own: what a
// forget leaves in the profile's files, and that after compact() no file
// holds a forgotten payload while every kept one is still found (the
// control). Chromium's (LevelDB) is tests/e2e/compact.test.mjs. Choose with
// ENGINES=firefox,webkit.
//
//   node --test --test-concurrency=1 tests/webdriver/compact.test.mjs   (after npm run build)
//
// Markers are 32 capital letters in payloads of one event per push, no two
// letters in a row twice in one marker: the rest of a record has no capital
// letter, so the Snappy compression Firefox applies to stored values (which
// refers back to any 4 bytes seen before in the value, here 2 characters of
// UTF-16) cannot cut a marker up.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launch, enginesFromEnv, uniqueName } from "./client.mjs";
import { serve } from "../../scripts/serve.mjs";
import { scanProfile, found, describeHits } from "../e2e/disk.mjs";

const ENGINES = enginesFromEnv(["firefox", "webkit"]).filter((e) => e !== "chromium");
const N = 20;

for (const engine of ENGINES) {
  test(`${engine}: a forget's payloads on disk, and after compact() in no file of the profile`, { timeout: 300_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), `eventstore-compact-${engine}-`));
    // One server for every start of the browser: the origin (its port) stays.
    const server = await serve();
    let browser = null;
    let tab;
    const start = async () => {
      browser = await launch(engine, engine === "firefox" ? { firefoxProfile: dir } : { dataDir: dir });
      tab = await browser.open(`${server.url}/tests/e2e/blank.html`);
      await tab.run(() => loadEventStore());
    };
    // The profile is scanned with the browser closed.
    const scan = async (markers) => {
      await browser.close();
      browser = null;
      return scanProfile(dir, markers);
    };
    try {
      const name = uniqueName("wd-compact-disk");
      await start();
      const { forgotten, kept } = await tab.run(async (name, n) => {
        const store = await EventStore.open(name);
        // No two-letter sequence twice in a marker (see the top of the file).
        const mark = () => {
          for (;;) {
            const m = Array.from(crypto.getRandomValues(new Uint8Array(32)), (x) => String.fromCharCode(65 + (x % 26))).join("");
            const pairs = new Set(Array.from({ length: 31 }, (_, i) => m.slice(i, i + 2)));
            if (pairs.size === 31) return m;
          }
        };
        const out = { forgotten: [], kept: [] };
        for (const [list, p] of [[out.forgotten, "f"], [out.kept, "k"]]) {
          for (let i = 0; i < n; i++) {
            const m = mark();
            list.push(m);
            await store.push([{ aggregate: `user.${p}${i}`, commands: [{ action: `user.${p}${i}.added`, payload: { email: `${m}@example.com` } }] }]);
          }
        }
        store.close();
        return out;
      }, [name, N]);
      const all = [...forgotten, ...kept];
      let hits = await scan(all);
      console.log(`${engine}: before the forget, ${describeHits(hits, all)}`);
      assert.deepEqual(found(hits, all), all, "control: the scan finds every marker before the forget");

      await start();
      const erased = await tab.run(async (name, n) => {
        const store = await EventStore.open(name);
        const erased = await store.forget({ queries: Array.from({ length: n }, (_, i) => ({ aggregate: `user.f${i}` })) });
        store.close();
        return erased;
      }, [name, N]);
      assert.equal(erased, N);
      hits = await scan(all);
      console.log(`${engine}: after the forget, kept ${describeHits(hits, kept)}; forgotten ${describeHits(hits, forgotten)}`);
      assert.deepEqual(found(hits, kept), kept, "the kept markers are on disk");

      await start();
      const r = await tab.run(async (name) => {
        const store = await EventStore.open(name);
        const before = await store.filter({});
        const t0 = performance.now();
        const again = await store.compact();
        const ms = performance.now() - t0;
        const after = await again.filter({});
        again.close();
        const databases = indexedDB.databases ? (await indexedDB.databases()).map((d) => d.name).filter((d) => d.startsWith(name)) : null;
        return { count: before.length, forgotten: after.filter((e) => e.forgotten).length, same: JSON.stringify(after) === JSON.stringify(before), ms, databases };
      }, [name]);
      console.log(`${engine}: compact() of ${r.count} events took ${r.ms.toFixed(0)} ms`);
      assert.equal(r.count, 2 * N);
      assert.equal(r.forgotten, N);
      assert.ok(r.same, "compact keeps every event as it was");
      if (r.databases) assert.deepEqual(r.databases, [name], "no holding database is left");
      hits = await scan(all);
      console.log(`${engine}: after compact(), kept ${describeHits(hits, kept)}; forgotten ${describeHits(hits, forgotten)}`);
      assert.deepEqual(found(hits, kept), kept, "after compact, the kept markers are on disk");
      assert.deepEqual(found(hits, forgotten), [], "after compact, no file of the profile holds a forgotten marker");
    } finally {
      await browser?.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
}
