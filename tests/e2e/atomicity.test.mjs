// SPEC 4, push: one IndexedDB transaction per call, all or nothing, and the
// store stays usable after a failure.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, TIMEOUT } from "./helpers.mjs";

let env, page;
before(async () => {
  env = await setup();
  page = await env.newPage();
});
after(() => env?.close());

/**
 * Opens a fresh store holding one event on "seed.1", runs `failing` (a page
 * function source using `store`), and returns the error, the raw record
 * counts before/after, the events after, and a follow-up push's result.
 */
const attempt = (failing) =>
  page.evaluate(
    `(async (name) => {
      window.store = await EventStore.open(name);
      await store.push([{ aggregate: "seed.1", commands: [{ action: "seed.1.planted" }] }]);
      const before = await rawCount(name);
      const err = await errorOf(${failing});
      const after = await rawCount(name);
      const events = await store.filter({});
      const next = await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added" }] }]);
      store.close();
      return { err, before, after, events: events.map((e) => e.aggregate.join(".") + "#" + e.sequence), next };
    })(${JSON.stringify(uniqueName("atomic"))})`,
  );

const assertNoTrace = (r, code) => {
  assert.equal(r.err?.code, code, `expected ${code}, got ${JSON.stringify(r.err)}`);
  assert.ok(r.before > 0, "the seed event is stored");
  assert.equal(r.after, r.before, "raw IndexedDB record count unchanged");
  assert.deepEqual(r.events, ["seed.1#1"], "no event of the failed call is visible");
  assert.deepEqual(r.next.map((e) => e.sequence), [1], "the store stays usable and no sequence was consumed");
};

test("SEQUENCE_MISMATCH in the second entry leaves no trace", { timeout: TIMEOUT }, async () => {
  const r = await attempt(`() => store.push([
    { aggregate: "user.A", commands: [{ action: "user.A.added" }, { action: "user.A.renamed" }] },
    { aggregate: "seed.1", expectedSequence: 5, commands: [{ action: "seed.1.watered" }] },
  ])`);
  assertNoTrace(r, "SEQUENCE_MISMATCH");
});

test("an invalid subject in the last entry leaves no trace", { timeout: TIMEOUT }, async () => {
  const r = await attempt(`() => store.push([
    { aggregate: "user.A", commands: [{ action: "user.A.added" }] },
    { aggregate: "user.B", commands: [{ action: "user.B.added" }, { action: "user.B.bad token" }] },
  ])`);
  assertNoTrace(r, "INVALID_SUBJECT");
});

const invalidPayloads = {
  function: "() => 1",
  NaN: "NaN",
  BigInt: "10n",
  "cyclic object": "(() => { const o = { a: 1 }; o.self = o; return o; })()",
  "nested Infinity": "{ deep: [1, { x: Infinity }] }",
};
for (const [what, payload] of Object.entries(invalidPayloads)) {
  test(`an invalid payload (${what}) in the last command leaves no trace`, { timeout: TIMEOUT }, async () => {
    const r = await attempt(`() => store.push([
      { aggregate: "user.A", commands: [{ action: "user.A.added", payload: { ok: true } }] },
      { aggregate: "user.B", commands: [{ action: "user.B.added" }, { action: "user.B.changed", payload: ${payload} }] },
    ])`);
    assertNoTrace(r, "INVALID_PAYLOAD");
  });
}

test("QUOTA_EXCEEDED writes nothing and the store is usable once space is back", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("quota");
  const cdp = await env.context.newCDPSession(page);
  try {
    await page.evaluate(async (name) => {
      window.store = await EventStore.open(name);
      await store.push([{ aggregate: "seed.1", commands: [{ action: "seed.1.planted" }] }]);
    }, name);
    const { usage } = await cdp.send("Storage.getUsageAndQuota", { origin: env.origin });
    await cdp.send("Storage.overrideQuotaForOrigin", { origin: env.origin, quotaSize: usage + 512 * 1024 });
    const r = await page.evaluate(async (name) => {
      // ~4 MB of incompressible text over 64 commands (Chromium counts stored, compressed bytes).
      const noise = () => {
        const bytes = crypto.getRandomValues(new Uint8Array(48 * 1024));
        return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
      };
      const commands = Array.from({ length: 64 }, (_, i) => ({ action: "big.1.chunk", payload: { i, data: noise() } }));
      const before = await rawCount(name);
      const err = await errorOf(() => store.push([{ aggregate: "big.1", commands }]));
      return { err, before, after: await rawCount(name), events: (await store.filter({})).length };
    }, name);
    await cdp.send("Storage.overrideQuotaForOrigin", { origin: env.origin });
    const next = await page.evaluate(async () => {
      const out = await store.push([{ aggregate: "big.1", commands: [{ action: "big.1.small", payload: "ok" }] }]);
      store.close();
      return out;
    });
    assert.equal(r.err?.code, "QUOTA_EXCEEDED", `expected QUOTA_EXCEEDED, got ${JSON.stringify(r.err)}`);
    assert.equal(r.err.isError, true);
    assert.equal(r.after, r.before, "raw IndexedDB record count unchanged");
    assert.equal(r.events, 1, "only the seed event is visible");
    assert.deepEqual(next.map((e) => e.sequence), [1], "usable after the quota is lifted, no sequence consumed");
  } finally {
    await cdp.send("Storage.overrideQuotaForOrigin", { origin: env.origin }).catch(() => {});
    await cdp.detach().catch(() => {});
  }
});
