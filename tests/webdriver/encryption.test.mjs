// Encryption at rest (docs/privacy.md) through WebDriver: one encrypted round
// trip in Firefox ESR (two tabs, a forget, a reopen), and in WebKitGTK,
// which has no OPFS sync access handles, the clear STORAGE error at open;
// choose with ENGINES=firefox,webkit. Chromium's tests are
// tests/e2e/encryption.test.mjs.
//
//   node --test --test-concurrency=1 tests/webdriver/encryption.test.mjs   (after npm run build)
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, enginesFromEnv, uniqueName } from "./client.mjs";
import { serve } from "../../scripts/serve.mjs";

const ENGINES = enginesFromEnv(["firefox", "webkit"]).filter((e) => e !== "chromium");

for (const engine of ENGINES) {
  describe(`encryption at rest in ${engine}`, { timeout: 300_000 }, () => {
    let server, browser, tabs;
    before(async () => {
      server = await serve();
      browser = await launch(engine, {});
      const page = `${server.url}/tests/e2e/blank.html`;
      tabs = [await browser.open(page), await browser.newTab(page)];
      for (const tab of tabs) await tab.run(() => loadEventStore());
    });
    after(async () => {
      await browser?.close();
      await server?.close();
    });

    if (engine === "webkit") {
      test("without OPFS sync access handles, open rejects with STORAGE, never an unencrypted store", { timeout: 120_000 }, async () => {
        const name = uniqueName("wd-enc-none");
        const r = await tabs[0].run(async (name) => {
          let error = null;
          try {
            await EventStore.open(name, { encryption: true });
          } catch (e) {
            error = { code: e.code, message: String(e.message) };
          }
          const plain = await EventStore.open(name);
          const count = await plain.count();
          plain.close();
          await EventStore.delete(name);
          return { error, count };
        }, [name]);
        console.log(`webkit: ${JSON.stringify(r.error)}`);
        assert.equal(r.error?.code, "STORAGE");
        assert.match(r.error.message, /Origin Private File System|FileSystemSyncAccessHandle/);
        assert.equal(r.count, 0, "nothing was written, and the flag was not set");
      });
      return;
    }

    test("an encrypted round trip across two tabs: push, read, forget, reopen", { timeout: 120_000 }, async () => {
      const name = uniqueName("wd-enc");
      const [a, b] = tabs;
      const pushed = await a.run(async (name) => {
        window.store = await EventStore.open(name, { encryption: true });
        const out = await store.push([
          { aggregate: "user.a", commands: [{ action: "user.a.added", payload: { secret: "FF-A-0" } }, { action: "user.a.renamed", payload: { secret: "FF-A-1" } }] },
          { aggregate: "user.b", commands: [{ action: "user.b.added", payload: { secret: "FF-B-0" } }] },
        ]);
        const raw = await rawRecords(name);
        return { payloads: out.map((e) => e.payload.secret), raw: JSON.stringify(raw) };
      }, [name]);
      assert.deepEqual(pushed.payloads, ["FF-A-0", "FF-A-1", "FF-B-0"]);
      assert.ok(!pushed.raw.includes("FF-"), "no payload in the clear in IndexedDB's records");
      assert.match(pushed.raw, /sealed/);
      const read = await b.run(async (name) => {
        window.store = await EventStore.open(name, { encryption: true });
        const all = (await store.filter()).map((e) => e.payload.secret);
        const forgotten = await store.forget({ queries: [{ aggregate: "user.a", subjects: "user.a.added" }] });
        return { all, forgotten, now: (await store.filter()).map((e) => e.payload?.secret ?? null) };
      }, [name]);
      assert.deepEqual(read.all, ["FF-A-0", "FF-A-1", "FF-B-0"]);
      assert.equal(read.forgotten, 1);
      assert.deepEqual(read.now, [null, "FF-A-1", "FF-B-0"], "a partial forget keeps the survivor readable");
      const again = await a.run(async (name) => {
        store.close();
        const s = await EventStore.open(name, { encryption: true });
        const out = (await s.filter()).map((e) => e.payload?.secret ?? null);
        s.close();
        await EventStore.delete(name);
        return out;
      }, [name]);
      assert.deepEqual(again, [null, "FF-A-1", "FF-B-0"]);
      await b.run(() => store.close());
    });
  });
}
