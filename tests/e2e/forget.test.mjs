// SPEC 4, forget: payloads erased, metadata kept, idempotent, and no record
// of the IndexedDB database still holds the personal data.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, TIMEOUT } from "./helpers.mjs";

let env, page;
before(async () => {
  env = await setup();
  page = await env.newPage();
});
after(() => env?.close());

const withoutPayload = ({ payload, forgotten, ...meta }) => meta;

test("forget erases user.A's payloads everywhere and keeps the log's shape", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("forget");
  const secret = `ada.${Date.now().toString(36)}@example.com`;
  const keep = `bob.${Date.now().toString(36)}@example.com`;
  const r = await page.evaluate(
    async ({ name, secret, keep }) => {
      window.store = await EventStore.open(name);
      await store.push([
        { aggregate: "user.A", commands: [{ action: "user.A.added", payload: { name: "Ada", email: secret } }] },
        { aggregate: "user.B", commands: [{ action: "user.B.added", payload: { name: "Bob", email: keep } }] },
      ]);
      await store.push([
        { aggregate: "user.A", commands: [{ action: "user.A.email.changed", revision: 2, payload: secret }, { action: "user.A.noted", payload: [secret, 1] }] },
      ]);
      const before = await store.filter({});
      const rawHitsBefore = await rawSearch(secret);
      const erased = await store.forget({ queries: [{ aggregate: "user.A" }] });
      const after = await store.filter({});
      const again = await store.forget({ queries: [{ aggregate: "user.A" }] });
      const withLimit = await errorOf(() => store.forget({ queries: [{ aggregate: "user.B" }], limit: 1 }));
      const rawHitsAfter = await rawSearch(secret);
      const rawHitsKept = await rawSearch(keep);
      store.close();
      window.store = await EventStore.open(name);
      const reopened = await store.filter({});
      const next = await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.readded", payload: { email: "new@example.com" } }] }]);
      store.close();
      return { before, rawHitsBefore, erased, after, again, withLimit, rawHitsAfter, rawHitsKept, reopened, next };
    },
    { name, secret, keep },
  );
  const isA = (e) => e.aggregate.join(".") === "user.A";
  assert.ok(r.rawHitsBefore.length > 0, "sanity: the raw search finds the email before forget");
  assert.equal(r.erased, 3, "forget returns the number of events erased");
  assert.equal(r.after.length, 4);
  for (const e of r.after.filter(isA)) {
    assert.equal(e.payload, null, `payload of ${e.action.join(".")}`);
    assert.equal(e.forgotten, true);
  }
  assert.deepEqual(r.after.map(withoutPayload), r.before.map(withoutPayload), "every metadata field unchanged");
  assert.deepEqual(r.after.filter((e) => !isA(e)), r.before.filter((e) => !isA(e)), "user.B untouched");
  assert.equal(r.again, 0, "forget again erases nothing");
  assert.equal(r.withLimit?.code, "INVALID_ARGUMENT", `forget with limit: ${JSON.stringify(r.withLimit)}`);
  assert.deepEqual(r.rawHitsAfter, [], "no IndexedDB record still holds the email");
  assert.ok(r.rawHitsKept.length > 0, "user.B's data is still stored");
  assert.deepEqual(r.reopened, r.after, "the erasure persists");
  assert.equal(r.next[0].sequence, 4, "the aggregate goes on");
  assert.deepEqual(r.next[0].payload, { email: "new@example.com" }, "later events keep their payload");
});

test("forget by action pattern erases only the matching events", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("forget-pattern");
  const secret = `carol.${Date.now().toString(36)}@example.com`;
  const r = await page.evaluate(
    async ({ name, secret }) => {
      const store = await EventStore.open(name);
      await store.push([
        { aggregate: "user.C", commands: [{ action: "user.C.added", payload: { name: "Carol" } }, { action: "user.C.email.changed", payload: { email: secret } }] },
      ]);
      const erased = await store.forget({ queries: [{ subjects: "user.*.email.>" }] });
      const events = await store.filter({});
      store.close();
      return { erased, events, hits: await rawSearch(secret) };
    },
    { name, secret },
  );
  assert.equal(r.erased, 1);
  assert.deepEqual(r.events.map((e) => [e.payload, e.forgotten]), [[{ name: "Carol" }, false], [null, true]]);
  assert.deepEqual(r.hits, []);
});
