// The package's entry in the browser: ready without `await init()`, `init`
// idempotent, `init(url)` still choosing where the wasm comes from, and the
// store's errors recognised by `instanceof EventStoreError`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setup, uniqueName, ROOT, TIMEOUT } from "./helpers.mjs";

let env, entry;
before(async () => {
  env = await setup();
  const pkg = JSON.parse(await readFile(join(ROOT, "pkg/package.json"), "utf8"));
  entry = `/pkg/${pkg.exports["."].import.replace(/^\.\//, "")}`;
});
after(() => env?.close());

/** A fresh page (a fresh module map) that records the .wasm it fetches. */
async function freshPage() {
  const page = await env.newPage({ load: false });
  const wasm = [];
  page.on("request", (r) => r.url().includes(".wasm") && wasm.push(new URL(r.url()).pathname + new URL(r.url()).search));
  return { page, wasm };
}

test("EventStore.open works without init(); concurrent first calls load the module once", { timeout: TIMEOUT }, async () => {
  const { page, wasm } = await freshPage();
  const r = await page.evaluate(
    async ({ entry, name }) => {
      const { EventStore } = await import(entry);
      const [a, b] = await Promise.all([EventStore.open(name), EventStore.open(name)]);
      const pushed = await a.push([{ aggregate: "user.A", commands: [{ action: "user.A.added", payload: { name: "Ada" } }] }]);
      const read = await b.filter({});
      a.close();
      b.close();
      await EventStore.delete(name);
      return { pushed: pushed.length, read: read.map((e) => e.payload.name) };
    },
    { entry, name: uniqueName("lazy") },
  );
  assert.deepEqual(r, { pushed: 1, read: ["Ada"] });
  assert.deepEqual(wasm, ["/pkg/eventstore_wasm_bg.wasm"], "the module next to the glue, fetched once");
  await page.close();
});

test("init() is idempotent and init(url) before the first call picks the wasm URL", { timeout: TIMEOUT }, async () => {
  const { page, wasm } = await freshPage();
  const r = await page.evaluate(
    async ({ entry, name }) => {
      const { default: init, EventStore } = await import(entry);
      const first = init("/pkg/eventstore_wasm_bg.wasm?custom=1");
      const same = init() === first && init("/elsewhere.wasm") === first;
      await first;
      const store = await EventStore.open(name);
      const count = (await store.filter({})).length;
      store.close();
      await EventStore.delete(name);
      return { same, count };
    },
    { entry, name: uniqueName("custom") },
  );
  assert.deepEqual(r, { same: true, count: 0 });
  assert.deepEqual(wasm, ["/pkg/eventstore_wasm_bg.wasm?custom=1"], "only the URL given to init");
  await page.close();
});

test("a failed init can be retried", { timeout: TIMEOUT }, async () => {
  const { page } = await freshPage();
  const r = await page.evaluate(async (entry) => {
    const { default: init, EventStore } = await import(entry);
    const failed = await init("/pkg/no-such-file.wasm").then(() => "loaded", () => "rejected");
    await init();
    return { failed, open: typeof (await EventStore.open("retry")).push };
  }, entry);
  assert.deepEqual(r, { failed: "rejected", open: "function" });
  await page.close();
});

test("the store's errors are instanceof EventStoreError, with the codes of ErrorCode", { timeout: TIMEOUT }, async () => {
  const { page } = await freshPage();
  const r = await page.evaluate(
    async ({ entry, name }) => {
      const { EventStore, EventStoreError, ErrorCode, isEventStoreError } = await import(entry);
      const store = await EventStore.open(name);
      const caught = await store.push([{ aggregate: "user.*", commands: [{ action: "user.A.added" }] }]).catch((e) => e);
      store.close();
      const closed = await store.filter({}).catch((e) => e);
      await EventStore.delete(name);
      return {
        instance: caught instanceof EventStoreError,
        code: caught.code === ErrorCode.INVALID_SUBJECT,
        guard: isEventStoreError(caught, "INVALID_SUBJECT") && !isEventStoreError(caught, "CLOSED"),
        closed: isEventStoreError(closed, ErrorCode.CLOSED),
        plain: new Error("x") instanceof EventStoreError || { code: "CLOSED" } instanceof EventStoreError,
        made: new EventStoreError("CLOSED", "closed") instanceof EventStoreError,
      };
    },
    { entry, name: uniqueName("errors") },
  );
  assert.deepEqual(r, { instance: true, code: true, guard: true, closed: true, plain: false, made: true });
  await page.close();
});

test("a disposed store (using, free) is closed: delete goes through, later calls reject with CLOSED", { timeout: TIMEOUT }, async () => {
  const { page } = await freshPage();
  const r = await page.evaluate(
    async ({ entry, name }) => {
      const { EventStore } = await import(entry);
      const timeout = (p, ms) => Promise.race([p.then(() => "done"), new Promise((ok) => setTimeout(() => ok("timed out"), ms))]);
      let kept;
      {
        // What `using store = await EventStore.open(name)` does at the end of the block.
        const store = await EventStore.open(name);
        await store.push([{ aggregate: "doc.1", commands: [{ action: "doc.1.x" }] }]);
        kept = store;
        store[Symbol.dispose]();
      }
      const deleted = await timeout(EventStore.delete(name), 5000);
      const push = await kept.push([]).then(() => "resolved", (e) => e.code);
      let subscribe;
      try { kept.subscribe({}, () => {}); subscribe = "returned"; } catch (e) { subscribe = e.code; }
      kept.close();
      const freed = await EventStore.open(name);
      freed.free();
      const filter = await freed.filter({}).then(() => "resolved", (e) => e.code);
      await EventStore.delete(name);
      return { deleted, push, subscribe, filter };
    },
    { entry, name: uniqueName("dispose") },
  );
  assert.deepEqual(r, { deleted: "done", push: "CLOSED", subscribe: "CLOSED", filter: "CLOSED" });
  await page.close();
});
