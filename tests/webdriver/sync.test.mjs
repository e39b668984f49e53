// Sync in every engine (Firefox ESR, WebKitGTK, Chromium through plain
// W3C WebDriver): two stores of one page are two devices (each store has
// its own database, sync state and Web Lock), syncing through a real
// eventstore-server started here (SQLite in a temp dir, 127.0.0.1).
// The full matrix of sync behaviours runs in Chromium (tests/e2e/sync.test.mjs);
// this file checks that the client's parts that differ per engine (fetch
// with abort signals, Web Locks, IndexedDB writes of pulled pages,
// conflicts, forgets) work in each.
//
//   node --test --test-concurrency=1 tests/webdriver/sync.test.mjs   (after npm run build)
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launch, enginesFromEnv, uniqueName } from "./client.mjs";
import { serve } from "../../scripts/serve.mjs";
import { buildServer, startSyncServer } from "../../scripts/sync-server.mjs";

const ENGINES = enginesFromEnv(["firefox", "webkit", "chromium"]);

for (const engine of ENGINES) {
  describe(`sync in ${engine}`, { timeout: 300_000 }, () => {
    let web, browser, tab, server, dir;

    before(async () => {
      buildServer({ quiet: true });
      web = await serve();
      dir = await mkdtemp(join(tmpdir(), "wd-sync-"));
      server = await startSyncServer({ database: `sqlite://${dir}/sync.db`, origins: [new URL(web.url).origin] });
      browser = await launch(engine);
      tab = await browser.open(`${web.url}/tests/e2e/blank.html`);
      await tab.run(() => loadEventStore());
    });
    after(async () => {
      await browser?.close();
      await server?.stop();
      await web?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    test("two devices converge through a conflict (rebase) and a forget", { timeout: 120_000 }, async () => {
      const names = [uniqueName("wd-a"), uniqueName("wd-b")];
      const r = await tab.run(async (url, names) => {
        const script = document.createElement("script");
        script.textContent = "globalThis.EVENTSTORE_SYNC_DEBUG = []; document.body.dataset.x = 1;";
        document.head.append(script);
        const log = () => { const s = document.createElement("script"); s.textContent = "document.body.dataset.log = globalThis.EVENTSTORE_SYNC_DEBUG.join(' | ')"; document.head.append(s); return document.body.dataset.log; };
        const flush = (s, what) => withTimeout(s.flush(), 20_000, what).catch((e) => { throw new Error(`${what}: ${e.message} ${log()}`); });
        const a = await EventStore.open(names[0]);
        const b = await EventStore.open(names[1]);
        const conflicts = [];
        const withdrawn = [];
        b.subscribe(undefined, () => {}, { onWithdraw: (events) => withdrawn.push(...events.map((e) => e.id)) });
        // Both devices write user.A #1 offline.
        await a.push([{ aggregate: "user.A", commands: [{ action: "user.A.added", payload: { by: "a", k: [1, 2] } }] }]);
        await b.push([{ aggregate: "user.A", commands: [{ action: "user.A.renamed", payload: { by: "b" } }] },
                      { aggregate: "user.B", commands: [{ action: "user.B.added", payload: { secret: "b-secret" } }] }]);
        // a (no onConflict) syncs first; b, which conflicts, decides.
        const sa = a.sync({ url });
        await flush(sa, "a's flush");
        const sb = b.sync({ url, onConflict: (c) => { conflicts.push(c); return "rebase"; } });
        await flush(sb, "b's flush");
        await flush(sa, "a's second flush");
        // A forget on b reaches a.
        await b.forget({ queries: [{ aggregate: "user.B" }] });
        await flush(sb, "b's flush after forget");
        await flush(sa, "a's flush after forget");
        const view = async (s) => (await s.filter({})).map((e) => ({ id: e.id, aggregate: e.aggregate.join("."), sequence: e.sequence,
          action: e.action.join("."), payload: e.payload, forgotten: e.forgotten, remotePosition: e.remotePosition }))
          .sort((x, y) => x.aggregate.localeCompare(y.aggregate) || x.sequence - y.sequence);
        const out = { a: await view(a), b: await view(b), statusA: sa.status(), statusB: sb.status(),
          conflicts: conflicts.map((c) => ({ aggregate: c.aggregate, pending: c.pending.length, remote: c.remote.length })),
          withdrawn: withdrawn.length, countB: await b.count({}) };
        sa.stop();
        sb.stop();
        a.close();
        b.close();
        return out;
      }, [server.url, names], 90_000);
      assert.deepEqual(r.a, r.b, "both devices hold the same events");
      assert.equal(r.a.length, 3);
      const userA = r.a.filter((e) => e.aggregate === "user.A");
      assert.deepEqual(userA.map((e) => [e.sequence, e.payload?.by]), [[1, "a"], [2, "b"]], "b's event rebased after a's");
      assert.deepEqual(r.conflicts, [{ aggregate: ["user", "A"], pending: 1, remote: 1 }]);
      assert.equal(r.withdrawn, 1, "b's subscriber was told of the withdrawn event");
      assert.equal(r.countB, 3, "count() subtracts the withdrawn position");
      const userB = r.a.find((e) => e.aggregate === "user.B");
      assert.equal(userB.forgotten, true);
      assert.equal(userB.payload, null);
      for (const e of r.a) assert.ok(Number.isInteger(e.remotePosition), `remotePosition of ${e.id}`);
      for (const s of [r.statusA, r.statusB]) {
        assert.equal(s.pending, 0);
        assert.equal(s.conflicts, 0);
        assert.equal(s.error, null);
      }
    });

    test("live: a push on one device reaches the other's subscription", { timeout: 120_000 }, async () => {
      const names = [uniqueName("wd-live-a"), uniqueName("wd-live-b")];
      const got = await tab.run(async (url, names) => {
        const a = await EventStore.open(names[0]);
        const b = await EventStore.open(names[1]);
        const sa = a.sync({ url });
        const sb = b.sync({ url });
        await withTimeout(sb.flush(), 20_000, "b's first flush");
        const seen = [];
        let done;
        const all = new Promise((ok) => { done = ok; });
        b.subscribe({ queries: [{ aggregate: "live.*" }] }, (e) => { seen.push(e.payload.n); if (seen.length === 5) done(); });
        for (let n = 0; n < 5; n++) await a.push([{ aggregate: `live.${n}`, commands: [{ action: `live.${n}.x`, payload: { n } }] }]);
        await withTimeout(all, 20_000, "b's subscription hearing a's pushes");
        sa.stop();
        sb.stop();
        a.close();
        b.close();
        return seen;
      }, [server.url, names], 60_000);
      assert.deepEqual(got, [0, 1, 2, 3, 4]);
    });
  });
}
