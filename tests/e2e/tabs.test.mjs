// SPEC 4: concurrent pushes from several tabs never duplicate a sequence or a
// position; another tab deleting or upgrading the database is not blocked.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, openStore, TIMEOUT } from "./helpers.mjs";

let env, pageA, pageB;
before(async () => {
  env = await setup();
  pageA = await env.newPage();
  pageB = await env.newPage();
});
after(() => env?.close());

const closeStore = (page) => page.evaluate(() => window.store?.close());
const readAll = (page) => page.evaluate(() => store.filter({}));

/** One aggregate's events: sequences 1..n, unique strictly increasing positions, unique ids. */
const assertGapless = (events, n) => {
  assert.equal(events.length, n, "event count");
  assert.deepEqual(events.map((e) => e.sequence), Array.from({ length: n }, (_, i) => i + 1), "sequences 1..n in position order");
  for (let i = 1; i < n; i++) {
    assert.ok(events[i].position > events[i - 1].position, `position ${events[i].position} after ${events[i - 1].position}`);
  }
  assert.equal(new Set(events.map((e) => e.id)).size, n, "ids are unique");
};

test("two tabs race 200 single-event pushes each to one aggregate", { timeout: 180_000 }, async () => {
  const name = uniqueName("race");
  await Promise.all([openStore(pageA, name), openStore(pageB, name)]);
  const race = (page, tab) =>
    page.evaluate(async (tab) => {
      for (let i = 0; i < 200; i++) {
        await store.push([{ aggregate: "counter.1", commands: [{ action: "counter.1.incremented", payload: { tab, i } }] }]);
      }
    }, tab);
  await Promise.all([race(pageA, "A"), race(pageB, "B")]);
  const [a, b] = await Promise.all([readAll(pageA), readAll(pageB)]);
  assertGapless(a, 400);
  assert.deepEqual(b, a, "both tabs see the same log");
  for (const tab of ["A", "B"]) {
    const own = a.filter((e) => e.payload.tab === tab).map((e) => e.payload.i);
    assert.deepEqual(own, Array.from({ length: 200 }, (_, i) => i), `tab ${tab}'s events keep their order`);
  }
  await Promise.all([closeStore(pageA), closeStore(pageB)]);
});

test("concurrent pushes from one page (not awaited one by one)", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("burst");
  await openStore(pageA, name);
  await pageA.evaluate(() =>
    Promise.all(Array.from({ length: 100 }, (_, i) => store.push([{ aggregate: "counter.2", commands: [{ action: "counter.2.incremented", payload: i }] }]))),
  );
  assertGapless(await readAll(pageA), 100);
  await closeStore(pageA);
});

test("two tabs race with expectedSequence, retrying on SEQUENCE_MISMATCH", { timeout: 180_000 }, async () => {
  const name = uniqueName("optimistic");
  await Promise.all([openStore(pageA, name), openStore(pageB, name)]);
  const race = (page, tab) =>
    page.evaluate(async (tab) => {
      let seen = 0, mismatches = 0;
      for (let i = 0; i < 100; i++) {
        for (let attempt = 0; ; attempt++) {
          if (attempt >= 500) throw new Error(`tab ${tab}: no progress after 500 attempts at event ${i}`);
          try {
            const [e] = await store.push([{ aggregate: "acc.1", expectedSequence: seen, commands: [{ action: "acc.1.moved", payload: { tab, i } }] }]);
            if (e.sequence !== seen + 1) throw new Error(`tab ${tab}: expected sequence ${seen + 1}, got ${e.sequence}`);
            seen = e.sequence;
            break;
          } catch (err) {
            if (err.code !== "SEQUENCE_MISMATCH") throw err;
            if (!(err.actual > seen)) throw new Error(`tab ${tab}: mismatch with actual ${err.actual} not above ${seen}`);
            mismatches++;
            seen = err.actual;
          }
        }
      }
      return mismatches;
    }, tab);
  await Promise.all([race(pageA, "A"), race(pageB, "B")]);
  const [a, b] = await Promise.all([readAll(pageA), readAll(pageB)]);
  assertGapless(a, 200);
  assert.deepEqual(b, a);
  for (const tab of ["A", "B"]) assert.equal(a.filter((e) => e.payload.tab === tab).length, 100, `tab ${tab} wrote 100`);
  await Promise.all([closeStore(pageA), closeStore(pageB)]);
});

test("another tab's EventStore.delete is not blocked; this tab's store then rejects CLOSED", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("versionchange");
  await openStore(pageA, name);
  await pageA.evaluate(() => store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added" }] }]));
  const deleted = await pageB.evaluate(async (name) => {
    const t0 = performance.now();
    const err = await errorOf(() => withTimeout(EventStore.delete(name), 5000, "EventStore.delete from tab B"));
    return { err, ms: performance.now() - t0, listed: name in (await rawDatabases()) };
  }, name);
  assert.equal(deleted.err, null, `delete resolved: ${JSON.stringify(deleted.err)}`);
  assert.equal(deleted.listed, false, "the database is gone");
  const r = await pageA.evaluate(async () => ({
    filter: await errorOf(() => store.filter({})),
    push: await errorOf(() => store.push([{ aggregate: "user.A", commands: [{ action: "user.A.again" }] }])),
  }));
  assert.equal(r.filter?.code, "CLOSED", `filter after the delete: ${JSON.stringify(r.filter)}`);
  assert.equal(r.push?.code, "CLOSED", `push after the delete: ${JSON.stringify(r.push)}`);
  assert.equal((await pageB.evaluate(() => rawDatabases()))[name], undefined, "tab A did not recreate the database");
});

test("another tab's upgrade of the database is not blocked; this tab's store then rejects CLOSED", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("upgrade");
  await openStore(pageA, name);
  await pageA.evaluate(() => store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added" }] }]));
  const upgraded = await pageB.evaluate(async (name) => {
    const version = (await rawDatabases())[name];
    const err = await errorOf(() => withTimeout(rawCreate(name, version + 1), 5000, "raw upgrade from tab B"));
    return { err, version, after: (await rawDatabases())[name] };
  }, name);
  assert.equal(upgraded.err, null, `upgrade went through: ${JSON.stringify(upgraded.err)}`);
  assert.equal(upgraded.after, upgraded.version + 1);
  const r = await pageA.evaluate(() => errorOf(() => store.filter({})));
  assert.equal(r?.code, "CLOSED", `filter after the upgrade: ${JSON.stringify(r)}`);
});

test("a tab reading in a tight loop does not hold back another tab's pushes", { timeout: TIMEOUT }, async () => {
  // Reads in a row share a read transaction, and IndexedDB starts no
  // read-write transaction while an older read transaction runs: the
  // sharing must stop soon enough for writers elsewhere to get in.
  const name = uniqueName("reader");
  await Promise.all([openStore(pageA, name), openStore(pageB, name)]);
  await pageB.evaluate(() => store.push([{ aggregate: "doc.1", commands: [{ action: "doc.1.created" }] }]));
  const reading = pageA.evaluate(async () => {
    const counts = [];
    const until = performance.now() + 1500;
    while (performance.now() < until) counts.push((await store.filter({ queries: [{ aggregate: "doc.1" }] })).length);
    return counts;
  });
  const latencies = await pageB.evaluate(async () => {
    await new Promise((r) => setTimeout(r, 200));
    const out = [];
    for (let i = 0; i < 10; i++) {
      const t = performance.now();
      await store.push([{ aggregate: "doc.1", commands: [{ action: "doc.1.edited", payload: i }] }]);
      out.push(performance.now() - t);
    }
    return out;
  });
  const counts = await reading;
  assert.ok(counts.length > 100, `the reader kept reading (${counts.length} reads)`);
  assert.ok(Math.max(...latencies) < 400, `each push waited at most 400 ms: ${latencies.map((l) => l.toFixed(0)).join(", ")} ms`);
  for (let i = 1; i < counts.length; i++) assert.ok(counts[i] >= counts[i - 1], "the reader never sees the log shrink");
  assert.equal(counts.at(-1), 11, "the reader saw every push");
  await Promise.all([closeStore(pageA), closeStore(pageB)]);
});
