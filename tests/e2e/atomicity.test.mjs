// SPEC 4, push: one IndexedDB transaction per call, all or nothing, and the
// store stays usable after a failure.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, TIMEOUT } from "./helpers.mjs";
import { serve } from "../../scripts/serve.mjs";

let env, page, other;
before(async () => {
  env = await setup();
  page = await env.newPage();
});
after(async () => {
  await env?.close();
  await other?.close();
});

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
  // Chromium's IndexedDB caches an origin's remaining space once it is in use,
  // so the quota override is set on a fresh origin (a second server) before its first page loads.
  other = await serve();
  const origin = new URL(other.url).origin;
  const quotaPage = await env.context.newPage();
  const cdp = await env.context.newCDPSession(quotaPage);
  try {
    await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 1024 * 1024 });
    await quotaPage.goto(`${other.url}/tests/e2e/blank.html`);
    await quotaPage.evaluate(() => loadEventStore());
    const r = await quotaPage.evaluate(async (name) => {
      window.store = await withTimeout(EventStore.open(name), 10000, "open under the quota");
      await withTimeout(store.push([{ aggregate: "seed.1", commands: [{ action: "seed.1.planted" }] }]), 10000, "seed push under the quota");
      // ~4 MB of incompressible text over 64 commands (Chromium counts stored, compressed bytes).
      const noise = () => {
        const bytes = crypto.getRandomValues(new Uint8Array(48 * 1024));
        return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
      };
      const commands = Array.from({ length: 64 }, (_, i) => ({ action: "big.1.chunk", payload: { i, data: noise() } }));
      const before = await rawCount(name);
      const err = await errorOf(() => store.push([{ aggregate: "big.1", commands }]));
      const after = await withTimeout(rawCount(name), 10000, "raw count after the quota error");
      const events = await withTimeout(store.filter({}), 10000, "filter after the quota error");
      return { err, before, after, events: events.length };
    }, uniqueName("quota"));
    await cdp.send("Storage.overrideQuotaForOrigin", { origin });
    const next = await quotaPage.evaluate(async () => {
      const small = store.push([{ aggregate: "big.1", commands: [{ action: "big.1.small", payload: "ok" }] }]);
      const out = await withTimeout(small, 10000, "a small push after the quota is lifted");
      store.close();
      return out;
    });
    assert.equal(r.err?.code, "QUOTA_EXCEEDED", `expected QUOTA_EXCEEDED, got ${JSON.stringify(r.err)}`);
    assert.equal(r.err.isError, true);
    assert.equal(r.after, r.before, "raw IndexedDB record count unchanged");
    assert.equal(r.events, 1, "only the seed event is visible");
    assert.deepEqual(next.map((e) => e.sequence), [1], "usable after the quota is lifted, no sequence consumed");
  } finally {
    await cdp.send("Storage.overrideQuotaForOrigin", { origin }).catch(() => {});
    await cdp.detach().catch(() => {});
    await quotaPage.close().catch(() => {});
  }
});
