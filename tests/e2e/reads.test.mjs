// The reads of issue 12 through the built package: get by id, count,
// reverse with limit, position ranges, and upcasters through filter,
// events, subscribe and get, including one that throws.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, TIMEOUT } from "./helpers.mjs";

let env, page;
before(async () => {
  env = await setup();
  page = await env.newPage();
});
after(() => env?.close());

test("get, count, reverse with limit and position ranges", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("reads");
  const r = await page.evaluate(async (name) => {
    const store = await EventStore.open(name);
    for (let i = 0; i < 50; i++) {
      const a = `user.u${i % 5}`;
      await store.push([{ aggregate: a, commands: [{ action: `${a}.added`, payload: { i } }, { action: `${a}.noted` }] }]);
    }
    const all = await store.filter({});
    const got = await store.get(all[37].id);
    const missing = await store.get("0190a0a0-0000-7000-8000-000000000000");
    const badId = await errorOf(() => store.get(42));
    const counts = {
      all: await store.count(),
      empty: await store.count({}),
      u3: await store.count({ queries: [{ aggregate: "user.u3" }] }),
      added: await store.count({ queries: [{ subjects: "user.*.added" }] }),
      limited: await store.count({ queries: [{ subjects: "user.*.added" }], limit: 7 }),
      positions: await store.count({ queries: [{ position: { from: 11, to: 21 } }] }),
    };
    const last20 = await store.filter({ reverse: true, limit: 20 });
    const lastOfU3 = await store.filter({ queries: [{ aggregate: "user.u3" }], reverse: true, limit: 3 });
    const reduced = [];
    await store.filter({ queries: [{ subjects: "user.u1.added" }], reverse: true }, (e) => reduced.push(e.position));
    const iterated = [];
    for await (const e of store.events({ queries: [{ aggregate: "user.>" }], reverse: true, limit: 1500 })) iterated.push(e.position);
    // Resuming from a saved position without a subscription.
    const saved = 90;
    const since = await store.filter({ queries: [{ position: { from: saved + 1 } }] });
    const window = await store.filter({ queries: [{ position: { from: 10, to: 14 }, subjects: "user.*.noted" }] });
    const badRange = await errorOf(() => store.filter({ queries: [{ position: { from: 1.5 } }] }));
    const badReverse = await errorOf(() => store.filter({ reverse: "yes" }));
    const reverseSubscribe = await errorOf(() => store.subscribe({ reverse: true }, () => {}));
    const reverseForget = await errorOf(() => store.forget({ reverse: true }));
    store.close();
    return {
      all, got, missing, badId, counts, last20, lastOfU3, reduced, iterated, since, window,
      badRange, badReverse, reverseSubscribe, reverseForget,
    };
  }, name);
  assert.equal(r.all.length, 100);
  assert.deepEqual(r.got, r.all[37], "get returns the event as filter does");
  assert.equal(r.missing, null);
  assert.equal(r.badId?.code, "INVALID_ARGUMENT");
  assert.deepEqual(r.counts, { all: 100, empty: 100, u3: 20, added: 50, limited: 7, positions: 10 });
  assert.deepEqual(r.last20, r.all.slice(80).reverse(), "the last 20 events, newest first");
  assert.deepEqual(r.lastOfU3.map((e) => e.sequence), [20, 19, 18]);
  assert.deepEqual(r.reduced, [93, 83, 73, 63, 53, 43, 33, 23, 13, 3], "a reducer is called newest first");
  assert.deepEqual(r.iterated, r.all.map((e) => e.position).reverse(), "events() iterates backwards");
  assert.deepEqual(r.since.map((e) => e.position), [91, 92, 93, 94, 95, 96, 97, 98, 99, 100]);
  assert.deepEqual(r.window.map((e) => e.position), [10, 12]);
  for (const key of ["badRange", "badReverse", "reverseSubscribe", "reverseForget"]) {
    assert.equal(r[key]?.code, "INVALID_ARGUMENT", `${key}: ${JSON.stringify(r[key])}`);
  }
  assert.match(r.reverseSubscribe.message, /reverse/);
});

test("upcasters turn old revisions into the current one on every read", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("upcast");
  const r = await page.evaluate(async (name) => {
    const old = await EventStore.open(name);
    await old.push([{ aggregate: "user.A", commands: [
      { action: "user.A.added", revision: 1, payload: { name: "Ada Lovelace" } },
      { action: "user.A.added", revision: 2, payload: { first: "Ada", last: "L" } },
      { action: "user.A.renamed", revision: 1, payload: { name: "Ada" } } ] }]);
    old.close();
    const upcasters = [
      { action: "user.*.added", from: 1, to: 2,
        upcast: (p, e) => { const [first, last] = p.name.split(" "); return { first, last, from: e.revision }; } },
      { action: ["user", "*", "added"], from: 2, to: 3, upcast: (p) => ({ ...p, tags: [] }) },
    ];
    const store = await EventStore.open(name, { upcasters });
    const filtered = await store.filter({ queries: [{ subjects: "user.A.>" }] });
    const reduced = [];
    await store.filter({}, (e) => reduced.push(e.revision));
    const iterated = [];
    for await (const e of store.events()) iterated.push(e);
    const got = await store.get(filtered[0].id);
    const seen = [];
    const stop = store.subscribe(undefined, (e) => seen.push(e));
    const pushed = await store.push([{ aggregate: "user.B", commands: [{ action: "user.B.added", revision: 1, payload: { name: "Bob B" } }] }]);
    for (let i = 0; i < 200 && seen.length < 4; i++) await new Promise((r) => setTimeout(r, 10));
    stop();
    const afterPush = await store.filter({ queries: [{ aggregate: "user.B" }] });
    store.close();
    return { filtered, reduced, iterated, got, seen, pushed, afterPush };
  }, name);
  const ada = { first: "Ada", last: "Lovelace", from: 1, tags: [] };
  assert.deepEqual(r.filtered.map((e) => [e.revision, e.payload]), [
    [3, ada],
    [3, { first: "Ada", last: "L", tags: [] }],
    [1, { name: "Ada" }],
  ]);
  assert.deepEqual(r.reduced, [3, 3, 1]);
  assert.deepEqual(r.iterated, r.filtered, "events() upcasts");
  assert.deepEqual(r.got, r.filtered[0], "get upcasts");
  assert.deepEqual(r.seen.slice(0, 3), r.filtered, "subscribe's catch-up upcasts");
  assert.deepEqual([r.seen[3]?.revision, r.seen[3]?.payload], [3, { first: "Bob", last: "B", from: 1, tags: [] }], "live events are upcast");
  assert.deepEqual([r.pushed[0].revision, r.pushed[0].payload], [1, { name: "Bob B" }], "push returns what was stored");
  assert.equal(r.afterPush[0].revision, 3);
});

test("an upcaster that throws rejects the read naming the event and the upcaster", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("upcast-throws");
  const r = await page.evaluate(async (name) => {
    const old = await EventStore.open(name);
    const [, bad] = await old.push([{ aggregate: "doc.1", commands: [
      { action: "doc.1.made", payload: { ok: true } },
      { action: "doc.1.made", payload: { ok: false } } ] }]);
    await old.forget({ queries: [{ position: { from: 1, to: 2 } }] });
    old.close();
    const store = await EventStore.open(name, { upcasters: [{ action: "doc.>", from: 1, to: 2,
      upcast: (p) => { if (!p.ok) throw new RangeError("not ok"); return p; } }] });
    const caught = async (f) => { try { await f(); return null; } catch (e) { return e; } };
    const fromFilter = await caught(() => store.filter({}));
    const fromEvents = await caught(async () => { for await (const e of store.events()) void e; });
    const fromGet = await caught(() => store.get(bad.id));
    const forgottenOne = await store.filter({ queries: [{ position: { to: 2 } }] });
    const toOnError = await new Promise((resolve) => {
      store.subscribe(undefined, () => {}, { onError: resolve });
    });
    const describe = (e) => e && ({ isError: e instanceof Error, code: e.code, message: e.message,
      cause: e.cause instanceof RangeError ? e.cause.message : String(e.cause) });
    const invalid = await errorOf(() => EventStore.open(name, { upcasters: [{ action: "doc.>", from: 2, to: 1, upcast: (p) => p }] }));
    const twice = await errorOf(() => EventStore.open(name, { upcasters: [
      { action: "doc.>", from: 1, to: 2, upcast: (p) => p }, { action: "doc.>", from: 1, to: 3, upcast: (p) => p }] }));
    const badPattern = await errorOf(() => EventStore.open(name, { upcasters: [{ action: "doc..x", from: 1, to: 2, upcast: (p) => p }] }));
    const unknown = await errorOf(() => EventStore.open(name, { upcaster: [] }));
    const notAnObject = await errorOf(() => EventStore.open(name, "upcasters"));
    store.close();
    return {
      bad: { id: bad.id, position: bad.position },
      fromFilter: describe(fromFilter), fromEvents: describe(fromEvents), fromGet: describe(fromGet),
      toOnError: describe(toOnError), forgottenOne, invalid, twice, badPattern, unknown, notAnObject,
    };
  }, name);
  for (const key of ["fromFilter", "fromEvents", "fromGet", "toOnError"]) {
    const e = r[key];
    assert.ok(e?.isError, `${key} rejects with an Error`);
    assert.equal(e.code, "INVALID_PAYLOAD", key);
    assert.equal(e.cause, "not ok", `${key}: cause is the thrown error`);
    for (const part of [r.bad.id, "doc.1.made", "revision 1", `position ${r.bad.position}`, "upcaster 0", "doc.>"]) {
      assert.ok(e.message.includes(part), `${key}: ${part} in ${e.message}`);
    }
  }
  assert.deepEqual(r.forgottenOne.map((e) => [e.revision, e.payload, e.forgotten]), [[1, null, true]], "a forgotten event is not upcast");
  assert.equal(r.invalid?.code, "INVALID_ARGUMENT");
  assert.match(r.invalid.message, /upcaster 0/);
  assert.equal(r.twice?.code, "INVALID_ARGUMENT");
  assert.match(r.twice.message, /upcaster 1 and upcaster 0/);
  assert.equal(r.badPattern?.code, "INVALID_SUBJECT");
  assert.equal(r.unknown?.code, "INVALID_ARGUMENT");
  assert.match(r.unknown.message, /unknown property "upcaster"/);
  assert.equal(r.notAnObject?.code, "INVALID_ARGUMENT");
});
