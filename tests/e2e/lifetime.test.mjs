// A store the app no longer references is freed by the garbage collector,
// which closes it (wasm-bindgen's FinalizationRegistry). One that still
// delivers events (a live subscription, a running events() iteration) must
// stay open: the app handed it callbacks or is iterating, and expects them
// to go on. Chromium runs with --expose-gc so that the test can collect.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, TIMEOUT } from "./helpers.mjs";

let env;
before(async () => {
  env = await setup({ args: ["--js-flags=--expose-gc"] });
});
after(() => env?.close());

/** In the page: collects garbage until the finalizers had their turn. */
const COLLECT = `async () => {
  for (let i = 0; i < 5; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 50));
  }
}`;

test("an unreferenced store with a live subscription and a running iteration stays open; one with neither is closed", { timeout: TIMEOUT }, async () => {
  const page = await env.newPage();
  const result = await page.evaluate(
    async ({ name, collect }) => {
      const collectGarbage = eval(collect);
      // 2,500 events: the iteration reads three pages, collecting in between.
      {
        const writer = await EventStore.open(name);
        for (let i = 0; i < 5; i++) {
          await writer.push(Array.from({ length: 5 }, (_, a) => ({
            aggregate: `user.u${i}x${a}`,
            commands: Array.from({ length: 100 }, () => ({ action: `user.u${i}x${a}.added`, payload: { i } })),
          })));
        }
        writer.close();
      }
      const received = [];
      let error = null;
      // Neither store is referenced once these functions return.
      // WeakRefs tell whether the collector freed each store.
      const subscribed = await (async () => {
        const store = await EventStore.open(name);
        store.subscribe(undefined, (e) => received.push(e.position), {
          fromPosition: "end",
          onError: (e) => { error = String(e); },
        });
        return new WeakRef(store);
      })();
      const [iterated$, iterator] = await (async () => {
        const store = await EventStore.open(name);
        return [new WeakRef(store), store.events({})[Symbol.asyncIterator]()];
      })();
      let iterated = 0;
      for (let step = 0; step < 2_500; step++) {
        const { done } = await iterator.next();
        if (done) break;
        iterated++;
        if (iterated % 1_000 === 0) await collectGarbage();
      }
      const ended = (await iterator.next()).done;
      // A store dropped with nothing live is closed by the collector: then
      // deleting the database is not blocked by its connection.
      const idle = await (async () => new WeakRef(await EventStore.open(`${name}-idle`)))();
      await collectGarbage();
      const idleFreed = idle.deref() === undefined;
      const deleted = await Promise.race([
        EventStore.delete(`${name}-idle`).then(() => true),
        new Promise((r) => setTimeout(() => r(false), 5_000)),
      ]);
      // The subscription still hears of a push from another connection.
      await collectGarbage();
      const other = await EventStore.open(name);
      const [pushed] = await other.push([{ aggregate: "user.late", commands: [{ action: "user.late.added" }] }]);
      const until = Date.now() + 10_000;
      while (!received.includes(pushed.position) && !error && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 20));
      }
      other.close();
      const held = { subscribed: subscribed.deref() !== undefined, iterating: iterated$.deref() !== undefined };
      return { iterated, ended, received, error, pushed: pushed.position, deleted, idleFreed, held };
    },
    { name: uniqueName("lifetime"), collect: COLLECT },
  );
  assert.equal(result.error, null, "the subscription did not end");
  assert.equal(result.iterated, 2_500, "the iteration read every page");
  assert.ok(result.ended, "and then ended");
  assert.deepEqual(result.received, [result.pushed], "the subscription delivered the later push");
  assert.deepEqual(result.held, { subscribed: true, iterating: true }, "the stores still delivering were not collected");
  assert.ok(result.idleFreed, "the idle store was collected");
  assert.ok(result.deleted, "the idle store was closed by the collector, so its database could be deleted");
  await page.close();
});
