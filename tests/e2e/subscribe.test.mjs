// Live subscriptions (issue 4): catch-up then live, across pages and a worker,
// exactly once and in order; unsubscribe; pages that were frozen or navigated
// away catch up.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName, openStore, TIMEOUT } from "./helpers.mjs";

let env;
before(async () => {
  env = await setup();
});
after(() => env?.close());

/** Opens `name` in the page and subscribes; received events go to window.received. */
const subscribe = (page, name, options = {}) =>
  page.evaluate(
    async ({ name, options }) => {
      window.store ??= await EventStore.open(name);
      window.received = [];
      window.unsubscribe = store.subscribe(options.filter, (e) => received.push(e), {
        fromPosition: options.fromPosition,
        onError: (e) => { window.subscriptionError = String(e); },
      });
    },
    { name, options },
  );

/** Waits (bounded) until the page has received `n` events; returns their positions. */
const received = (page, n, ms = 30_000) =>
  page.evaluate(
    async ({ n, ms }) => {
      const until = Date.now() + ms;
      while (received.length < n && Date.now() < until && !window.subscriptionError) {
        await new Promise((r) => setTimeout(r, 20));
      }
      if (window.subscriptionError) throw new Error(window.subscriptionError);
      return received.map((e) => e.position);
    },
    { n, ms },
  );

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

const pushMany = (page, aggregate, count) =>
  page.evaluate(
    async ({ aggregate, count }) => {
      for (let i = 0; i < count; i++) {
        await store.push([{ aggregate, commands: [{ action: `${aggregate}.pushed`, payload: { i } }] }]);
      }
    },
    { aggregate, count },
  );

test("three pages pushing 1,000 events each: every subscriber sees all 3,000 in one order", { timeout: 240_000 }, async () => {
  const name = uniqueName("live-load");
  const pages = await Promise.all([env.newPage(), env.newPage(), env.newPage()]);
  for (const page of pages) await subscribe(page, name);
  await Promise.all(pages.map((page, i) => pushMany(page, `tab.p${i}`, 1000)));
  const seen = await Promise.all(pages.map((page) => received(page, 3000)));
  for (const positions of seen) assert.deepEqual(positions, range(1, 3000));
  const ids = await pages[0].evaluate(() => received.map((e) => e.id));
  assert.equal(new Set(ids).size, 3000, "no duplicate");
  for (const page of pages) {
    const order = await page.evaluate(() => received.map((e) => e.id).join());
    assert.equal(order, ids.join(), "same order in every page");
  }
  await Promise.all(pages.map((p) => p.close()));
});

test("a subscriber started mid-stream gets catch-up then live, nothing missed or doubled", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("live-race");
  const [writer, reader] = await Promise.all([env.newPage(), env.newPage()]);
  await openStore(writer, name);
  const pushing = pushMany(writer, "race.a", 400);
  await writer.waitForFunction(async () => (await store.filter({ limit: 50 })).length >= 50);
  await subscribe(reader, name, { filter: { queries: [{ aggregate: "race.>" }] } });
  await pushing;
  assert.deepEqual(await received(reader, 400), range(1, 400));
  // Unsubscribe stops delivery.
  await reader.evaluate(() => unsubscribe());
  await pushMany(writer, "race.a", 5);
  await writer.waitForTimeout(300);
  assert.equal(await reader.evaluate(() => received.length), 400);
  await Promise.all([writer.close(), reader.close()]);
});

test("fromPosition: 'end' delivers only what comes after", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("live-end");
  const [writer, reader] = await Promise.all([env.newPage(), env.newPage()]);
  await openStore(writer, name);
  await pushMany(writer, "end.a", 10);
  await subscribe(reader, name, { fromPosition: "end" });
  await pushMany(writer, "end.a", 3);
  assert.deepEqual(await received(reader, 3), [11, 12, 13]);
  await Promise.all([writer.close(), reader.close()]);
});

test("a frozen page catches up when it resumes", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("live-frozen");
  const [writer, sleeper] = await Promise.all([env.newPage(), env.newPage()]);
  await openStore(writer, name);
  await subscribe(sleeper, name);
  await pushMany(writer, "frozen.a", 5);
  assert.deepEqual(await received(sleeper, 5), range(1, 5));
  const cdp = await env.context.newCDPSession(sleeper);
  await cdp.send("Page.setWebLifecycleState", { state: "frozen" });
  await pushMany(writer, "frozen.a", 20);
  await cdp.send("Page.setWebLifecycleState", { state: "active" });
  assert.deepEqual(await received(sleeper, 25), range(1, 25));
  await Promise.all([writer.close(), sleeper.close()]);
});

test("a page navigated away and back resumes from its last delivered position", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("live-nav");
  const [writer, reader] = await Promise.all([env.newPage(), env.newPage()]);
  await openStore(writer, name);
  await subscribe(reader, name);
  await pushMany(writer, "nav.a", 5);
  assert.deepEqual(await received(reader, 5), range(1, 5));
  await reader.evaluate(() => sessionStorage.setItem("last", String(received.at(-1).position)));
  await reader.goto(`${env.url}/www/index.html`);
  await pushMany(writer, "nav.a", 7);
  await reader.goBack();
  // Restored from the back/forward cache, the subscription goes on by itself;
  // reloaded, the app subscribes again from the position it saved.
  const restored = await reader.evaluate(() => typeof window.received !== "undefined");
  if (!restored) {
    await reader.evaluate(() => loadEventStore());
    const last = Number(await reader.evaluate(() => sessionStorage.getItem("last")));
    await subscribe(reader, name, { fromPosition: last });
    assert.deepEqual(await received(reader, 7), range(6, 12));
  } else {
    assert.deepEqual(await received(reader, 12), range(1, 12));
  }
  await Promise.all([writer.close(), reader.close()]);
});

test("events pushed in a Web Worker reach the page's subscription", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("live-worker");
  const page = await env.newPage();
  await subscribe(page, name);
  const answer = await page.evaluate(
    (name) =>
      new Promise((resolve) => {
        const worker = new Worker("/tests/e2e/worker.js", { type: "module" });
        worker.onmessage = ({ data }) => {
          if (data.ready) worker.postMessage({ name, aggregate: "worker.w1", count: 25 });
          else { worker.terminate(); resolve(data); }
        };
        worker.onerror = (e) => resolve({ error: e.message });
      }),
    name,
  );
  assert.deepEqual(answer, { done: 25 });
  assert.deepEqual(await received(page, 25), range(1, 25));
  await page.close();
});

test("subscribers are told of forgets in another page", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("live-forget");
  const [writer, reader] = await Promise.all([env.newPage(), env.newPage()]);
  await openStore(writer, name);
  await reader.evaluate(async (name) => {
    window.store = await EventStore.open(name);
    window.received = [];
    window.forgotten = [];
    store.subscribe({ queries: [{ aggregate: "gdpr.>" }] }, (e) => received.push(e), {
      onForget: (events) => forgotten.push(...events),
    });
  }, name);
  await writer.evaluate(() =>
    store.push([{ aggregate: "gdpr.alice", commands: [{ action: "gdpr.alice.added", payload: { email: "alice@example.com" } }] },
                { aggregate: "gdpr.bob", commands: [{ action: "gdpr.bob.added", payload: { email: "bob@example.com" } }] }]),
  );
  await received(reader, 2);
  assert.equal(await writer.evaluate(() => store.forget({ queries: [{ aggregate: "gdpr.alice" }] })), 1);
  const forgotten = await reader.evaluate(async () => {
    for (let i = 0; i < 200 && forgotten.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    return forgotten;
  });
  assert.equal(forgotten.length, 1);
  assert.deepEqual(forgotten[0].aggregate, ["gdpr", "alice"]);
  assert.equal(forgotten[0].payload, null);
  assert.equal(forgotten[0].forgotten, true);
  await Promise.all([writer.close(), reader.close()]);
});

test("a page opened after the subscriber pushes at once: the subscriber still hears of it", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("live-late-writer");
  const reader = await env.newPage();
  await subscribe(reader, name);
  for (let round = 0; round < 5; round++) {
    const writer = await env.newPage();
    // No await between open and push: the push races with the channel's who/hello.
    await writer.evaluate(async ({ name, round }) => {
      const store = await EventStore.open(name);
      await store.push([{ aggregate: `late.w${round}`, commands: [{ action: `late.w${round}.pushed` }] }]);
      store.close();
    }, { name, round });
    assert.deepEqual(await received(reader, round + 1, 5_000), range(1, round + 1), `writer ${round}`);
    await writer.close();
  }
  await reader.close();
});
