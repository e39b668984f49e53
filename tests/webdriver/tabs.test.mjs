// SPEC 4 across tabs, in every engine: tabs of one WebDriver session share the
// origin's IndexedDB and BroadcastChannel, as a user's tabs do. Firefox ESR
// (geckodriver) and WebKitGTK (WebKitWebDriver + MiniBrowser) by default, and
// Chromium (chromedriver); choose with ENGINES=firefox,webkit,chromium.
//
//   node --test --test-concurrency=1 tests/webdriver/    (after npm run build)
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, enginesFromEnv, startJob, finishJob, uniqueName } from "./client.mjs";
import { serve } from "../../scripts/serve.mjs";

const ENGINES = enginesFromEnv(["firefox", "webkit", "chromium"]);
const TABS = 3;
const PER_TAB = 30; // optimistic pushes per tab in the race
const LIVE = 15; // pushes per pushing tab in the subscription test

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** One aggregate's events: sequences 1..n in log order, unique increasing positions, unique ids. */
function assertGapless(events, n) {
  assert.equal(events.length, n, "event count");
  assert.deepEqual(events.map((e) => e.sequence), Array.from({ length: n }, (_, i) => i + 1), "sequences 1..n in position order");
  for (let i = 1; i < n; i++) {
    assert.ok(events[i].position > events[i - 1].position, `position ${events[i].position} after ${events[i - 1].position}`);
  }
  assert.equal(new Set(events.map((e) => e.id)).size, n, "ids are unique");
}

for (const engine of ENGINES) {
  describe(`several tabs in ${engine}`, { timeout: 400_000 }, () => {
    let server, browser, tabs;

    before(async () => {
      server = await serve();
      browser = await launch(engine);
      const page = `${server.url}/tests/e2e/blank.html`;
      tabs = [await browser.open(page)];
      for (let i = 1; i < TABS; i++) tabs.push(await browser.newTab(page));
      for (const tab of tabs) await tab.run(() => loadEventStore());
    });
    after(async () => {
      await browser?.close();
      await server?.close();
    });

    const openAll = async (name) => {
      for (const tab of tabs) await tab.run(async (name) => { window.store = await EventStore.open(name); }, [name]);
    };
    const closeAll = async () => {
      for (const tab of tabs) await tab.run(() => { window.unsubscribe?.(); window.store?.close(); });
    };

    test(`${TABS} tabs race optimistic pushes on one aggregate, retrying on SEQUENCE_MISMATCH`, { timeout: 240_000 }, async () => {
      const name = uniqueName("wd-optimistic");
      await openAll(name);
      const race = async (tab, count) => {
        let seen = 0, mismatches = 0;
        for (let i = 0; i < count; i++) {
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
      };
      for (const [i, tab] of tabs.entries()) await startJob(tab, race, [i, PER_TAB]);
      const deadline = Date.now() + 180_000;
      const mismatches = [];
      for (const [i, tab] of tabs.entries()) mismatches.push(await finishJob(tab, deadline, `${engine} tab ${i}`));

      const logs = [];
      for (const tab of tabs) logs.push(await tab.run(() => store.filter({})));
      const all = logs[0];
      assertGapless(all, TABS * PER_TAB);
      for (const other of logs.slice(1)) assert.deepEqual(other, all, "every tab reads the same log");
      for (let t = 0; t < TABS; t++) {
        const own = all.filter((e) => e.payload.tab === t).map((e) => e.payload.i);
        assert.deepEqual(own, Array.from({ length: PER_TAB }, (_, i) => i), `tab ${t}'s events are there once each, in its order`);
      }
      assert.ok(mismatches.every((m) => Number.isInteger(m)), `mismatch counts ${mismatches}`);
      await closeAll();
    });

    test("a subscriber in one tab sees two other tabs' pushes exactly once, in order", { timeout: 240_000 }, async () => {
      const name = uniqueName("wd-live");
      await openAll(name);
      const [subscriber, ...pushers] = tabs;
      await subscriber.run(() => {
        window.seen = [];
        window.failures = [];
        window.unsubscribe = store.subscribe({ queries: [{ aggregate: "note.>" }] }, (e) => seen.push(e), {
          onError: (e) => failures.push(`${e.code}: ${e.message}`),
        });
      });
      const pushMany = async (tab, count) => {
        for (let i = 0; i < count; i++) {
          await store.push([{ aggregate: ["note", `t${tab}`], commands: [{ action: ["note", `t${tab}`, "written"], payload: { tab, i } }] }]);
        }
      };
      for (const [i, tab] of pushers.entries()) await startJob(tab, pushMany, [i + 1, LIVE]);
      const deadline = Date.now() + 180_000;
      for (const [i, tab] of pushers.entries()) await finishJob(tab, deadline, `${engine} pushing tab ${i + 1}`);

      const want = pushers.length * LIVE;
      let got = 0;
      while (Date.now() < deadline) {
        got = await subscriber.run(() => seen.length);
        if (got >= want) break;
        await sleep(200);
      }
      await sleep(1000); // room for a duplicate to show up
      const { seen, failures, stored } = await subscriber.run(async () => ({ seen, failures, stored: await store.filter({}) }));
      assert.deepEqual(failures, [], "no subscription error");
      assert.equal(stored.length, want, "the log holds every push");
      assert.equal(seen.length, want, `the subscriber saw ${seen.length} events, want ${want} (no loss, no duplicate)`);
      assert.deepEqual(seen.map((e) => e.id), stored.map((e) => e.id), "delivered exactly once each, in log order");
      for (let t = 1; t <= pushers.length; t++) {
        assert.deepEqual(seen.filter((e) => e.payload.tab === t).map((e) => e.sequence), Array.from({ length: LIVE }, (_, i) => i + 1),
          `tab ${t}'s events arrive in its order`);
      }
      await closeAll();
    });
  });
}
