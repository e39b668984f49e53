// SPEC 4, open / close / delete: data survives close, reload and a browser
// restart; calls after close() reject CLOSED; EventStore.delete removes it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, TIMEOUT } from "./helpers.mjs";

let env;
before(async () => {
  env = await setup();
});
after(() => env?.close());

const pushSome = (page, name) =>
  page.evaluate(async (name) => {
    const store = await EventStore.open(name);
    const events = await store.push([
      { aggregate: "user.A", commands: [{ action: "user.A.added", payload: { name: "Ada" } }, { action: "user.A.renamed", payload: { name: "Ada L." } }] },
      { aggregate: "user.B", commands: [{ action: "user.B.added", revision: 3, payload: [1, 2] }] },
    ]);
    store.close();
    return events;
  }, name);

const readAll = (page, name) =>
  page.evaluate(async (name) => {
    const store = await EventStore.open(name);
    const events = await store.filter({});
    const next = await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.seen" }] }]);
    store.close();
    return { events, next: next[0] };
  }, name);

const assertSurvived = (pushed, { events, next }) => {
  assert.deepEqual(events, pushed, "every event, field for field");
  assert.equal(next.sequence, 3, "the aggregate's sequence continues");
  assert.ok(next.position > Math.max(...pushed.map((e) => e.position)), "positions continue");
};

test("data survives close() and reopen", { timeout: TIMEOUT }, async () => {
  const page = await env.newPage();
  const name = uniqueName("reopen");
  const pushed = await pushSome(page, name);
  assertSurvived(pushed, await readAll(page, name));
  await page.close();
});

test("data survives a page reload", { timeout: TIMEOUT }, async () => {
  const page = await env.newPage();
  const name = uniqueName("reload");
  const pushed = await pushSome(page, name);
  await page.reload();
  await page.evaluate(() => loadEventStore());
  assertSurvived(pushed, await readAll(page, name));
  await page.close();
});

test("data survives a browser restart", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("restart");
  const pushed = await pushSome(await env.newPage(), name);
  await env.restart();
  const page = await env.newPage();
  assertSurvived(pushed, await readAll(page, name));
  await page.close();
});

test("every method after close() rejects with CLOSED", { timeout: TIMEOUT }, async () => {
  const page = await env.newPage();
  const r = await page.evaluate(async (name) => {
    const store = await EventStore.open(name);
    await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added" }] }]);
    store.close();
    return {
      push: await errorOf(() => store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added" }] }])),
      pushEmpty: await errorOf(() => store.push([])),
      filter: await errorOf(() => store.filter({})),
      reducer: await errorOf(() => store.filter({}, () => {})),
      forget: await errorOf(() => store.forget({ queries: [{ aggregate: "user.A" }] })),
      closeAgain: await errorOf(() => store.close()),
    };
  }, uniqueName("closed"));
  for (const method of ["push", "pushEmpty", "filter", "reducer", "forget"]) {
    assert.equal(r[method]?.code, "CLOSED", `${method} after close(): ${JSON.stringify(r[method])}`);
    assert.equal(r[method].isError, true);
    assert.match(r[method].message, /clos/i);
  }
  assert.equal(r.closeAgain, null, "close() twice does not throw");
  await page.close();
});

test("EventStore.delete(name) removes the database", { timeout: TIMEOUT }, async () => {
  const page = await env.newPage();
  const name = uniqueName("delete");
  await pushSome(page, name);
  const r = await page.evaluate(async (name) => {
    const listedBefore = name in (await rawDatabases());
    await withTimeout(EventStore.delete(name), 10000, "EventStore.delete");
    const listedAfter = name in (await rawDatabases());
    const store = await EventStore.open(name);
    const events = await store.filter({});
    const next = await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added" }] }]);
    store.close();
    await EventStore.delete(name);
    return { listedBefore, listedAfter, events, next };
  }, name);
  assert.equal(r.listedBefore, true);
  assert.equal(r.listedAfter, false, "indexedDB.databases() no longer lists it");
  assert.deepEqual(r.events, [], "reopened under the same name it is empty");
  assert.equal(r.next[0].sequence, 1);
  await page.close();
});
