// The built package under Node with fake-indexeddb, the way an app's unit
// tests (node:test, Vitest) use it: no browser, no `init()` call.
import "fake-indexeddb/auto";
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventStore, EventStoreError, ErrorCode, isEventStoreError } from "../../pkg/index.js";

let counter = 0;
const uniqueName = (prefix) => `${prefix}-${process.pid}-${++counter}`;

/** Opens a fresh store, runs `body`, closes and deletes it. */
async function withStore(prefix, body) {
  const name = uniqueName(prefix);
  const store = await EventStore.open(name);
  try {
    return await body(store, name);
  } finally {
    store.close();
    await EventStore.delete(name);
  }
}

const user = (id, ...actions) => ({
  aggregate: ["user", id],
  commands: actions.map((a) => ({ action: `user.${id}.${a}`, payload: { name: `${id}-${a}` } })),
});

test("push, then filter by pattern, aggregate and range", () =>
  withStore("filter", async (store) => {
    const pushed = await store.push([user("A", "added", "renamed"), user("B", "added")]);
    assert.deepEqual(pushed.map((e) => [e.action.join("."), e.sequence]), [
      ["user.A.added", 1],
      ["user.A.renamed", 2],
      ["user.B.added", 1],
    ]);
    assert.match(pushed[0].id, /^[0-9a-f]{8}-[0-9a-f]{4}-7/, "a UUIDv7 (crypto works)");
    const added = await store.filter({ queries: [{ subjects: "user.*.added" }] });
    assert.deepEqual(added.map((e) => e.payload.name), ["A-added", "B-added"]);
    const a = await store.filter({ queries: [{ aggregate: "user.A", sequence: { from: 2 } }] });
    assert.deepEqual(a.map((e) => e.action.join(".")), ["user.A.renamed"]);
    let seen = 0;
    assert.equal(await store.filter({}, () => void seen++), undefined);
    assert.equal(seen, 3);
    const streamed = [];
    for await (const e of store.events({ queries: [{ aggregate: "user.>" }] })) streamed.push(e.position);
    assert.deepEqual(streamed, pushed.map((e) => e.position));
  }));

test("expectedSequence is checked (SEQUENCE_MISMATCH) and nothing of the call is written", () =>
  withStore("sequence", async (store) => {
    await store.push([{ ...user("A", "added"), expectedSequence: 0 }]);
    const error = await store
      .push([user("B", "added"), { ...user("A", "renamed"), expectedSequence: 0 }])
      .then(() => assert.fail("the push was accepted"), (e) => e);
    assert.ok(error instanceof Error);
    assert.ok(error instanceof EventStoreError, "instanceof EventStoreError recognises the store's errors");
    assert.ok(isEventStoreError(error, ErrorCode.SEQUENCE_MISMATCH));
    assert.equal(error.code, "SEQUENCE_MISMATCH");
    assert.deepEqual([error.aggregate, error.expected, error.actual], [["user", "A"], 0, 1]);
    assert.equal((await store.filter({})).length, 1, "user.B was not written");
  }));

test("forget erases payloads and keeps the metadata", () =>
  withStore("forget", async (store) => {
    await store.push([user("A", "added", "renamed"), user("B", "added")]);
    assert.equal(await store.forget({ queries: [{ aggregate: "user.A" }] }), 2);
    assert.equal(await store.forget({ queries: [{ aggregate: "user.A" }] }), 0, "idempotent");
    const events = await store.filter({});
    assert.deepEqual(events.map((e) => [e.sequence, e.payload, e.forgotten]), [
      [1, null, true],
      [2, null, true],
      [1, { name: "B-added" }, false],
    ]);
    const limited = await store.forget({ limit: 1 }).catch((e) => e);
    assert.equal(limited.code, "INVALID_ARGUMENT");
  }));

test("a subscription catches up, goes live and hears of forgets", () =>
  withStore("subscribe", async (store, name) => {
    await store.push([user("A", "added")]);
    const seen = [];
    const forgotten = [];
    let wake;
    const delivered = (n) => new Promise((resolve) => (wake = () => seen.length >= n && resolve()));
    const stop = store.subscribe(
      { queries: [{ subjects: "user.*.added" }] },
      (e) => {
        seen.push(e.aggregate[1]);
        wake?.();
      },
      { onForget: (events) => forgotten.push(...events.map((e) => e.aggregate[1])), onError: (e) => seen.push(e) },
    );
    try {
      await delivered(1);
      await store.push([user("B", "added", "renamed")]);
      await delivered(2);
      // A second connection to the same database, as another tab would be.
      const other = await EventStore.open(name);
      try {
        await other.push([user("C", "added")]);
        await delivered(3);
      } finally {
        other.close();
      }
      assert.deepEqual(seen, ["A", "B", "C"], "each matching event once, in order");
      await store.forget({ queries: [{ aggregate: "user.B" }] });
      for (let i = 0; i < 100 && forgotten.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(forgotten, ["B"]);
    } finally {
      stop();
    }
  }));

test("data outlives close; calls after close reject with CLOSED", async () => {
  const name = uniqueName("reopen");
  const first = await EventStore.open(name);
  await first.push([user("A", "added")]);
  first.close();
  const error = await first.filter({}).catch((e) => e);
  assert.equal(error.code, ErrorCode.CLOSED);
  const second = await EventStore.open(name);
  assert.equal((await second.filter({})).length, 1);
  second.close();
  await EventStore.delete(name);
});

test("get, count, reverse, positions and upcasters under fake-indexeddb", async () => {
  const name = uniqueName("reads");
  const plain = await EventStore.open(name);
  const pushed = [];
  for (let i = 0; i < 30; i++) pushed.push(...(await plain.push([user(`u${i % 3}`, "added", "renamed")])));
  plain.close();
  const store = await EventStore.open(name, {
    upcasters: [{ action: "user.*.renamed", from: 1, to: 2, upcast: (p) => ({ ...p, v: 2 }) }],
  });
  try {
    const got = await store.get(pushed[41].id);
    assert.deepEqual([got.position, got.revision, got.payload.v], [42, 2, 2]);
    assert.equal(await store.get("no-such-id"), null);
    assert.equal(await store.count(), 60);
    assert.equal(await store.count({ queries: [{ aggregate: "user.u1" }] }), 20);
    assert.equal(await store.count({ queries: [{ subjects: "user.*.added" }], limit: 4 }), 4);
    const last = await store.filter({ queries: [{ aggregate: "user.>" }], reverse: true, limit: 3 });
    assert.deepEqual(last.map((e) => e.position), [60, 59, 58]);
    const back = [];
    for await (const e of store.events({ reverse: true, limit: 1500 })) back.push(e.position);
    assert.deepEqual(back, pushed.map((e) => e.position).reverse());
    const since = await store.filter({ queries: [{ position: { from: 56 } }] });
    assert.deepEqual(since.map((e) => e.position), [56, 57, 58, 59, 60]);
  } finally {
    store.close();
    await EventStore.delete(name);
  }
});

test("compact() keeps every event under fake-indexeddb (no Web Locks) and resolves to the reopened store", async () => {
  const name = uniqueName("compact");
  const store = await EventStore.open(name);
  await store.push([user("A", "added", "renamed"), user("B", "added")]);
  await store.forget({ queries: [{ aggregate: "user.A" }] });
  const before = await store.filter({});
  const again = await store.compact();
  try {
    assert.deepEqual(await again.filter({}), before);
    assert.equal((await store.count().catch((e) => e)).code, "CLOSED");
    assert.deepEqual((await indexedDB.databases()).map((d) => d.name).filter((n) => n.startsWith(name)), [name]);
    const [next] = await again.push([user("C", "added")]);
    assert.equal(next.position, 4);
  } finally {
    again.close();
    await EventStore.delete(name);
  }
});
