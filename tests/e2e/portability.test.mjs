// store.export(filter) and EventStore.import(name, source): NDJSON round trip
// of 100,000 events in a stream (peak JS heap reported), and an import of a
// truncated or corrupt file writes nothing and names the line.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, uniqueName } from "./helpers.mjs";

let env, page;
before(async () => {
  // gc() in the page, so that the heap sampled is what is alive.
  env = await setup({ args: ["--js-flags=--expose-gc"] });
  page = await env.newPage();
});
after(() => env?.close());

test("a 100,000-event export imports as it was, streamed", { timeout: 300_000 }, async () => {
  const [from, to] = [uniqueName("export-from"), uniqueName("export-to")];
  const r = await page.evaluate(async ({ from, to }) => {
    const a = await EventStore.open(from);
    for (let p = 0; p < 1000; p++) {
      const entries = [];
      for (let k = 0; k < 25; k++) {
        const agg = `user.u${(p * 25 + k) % 1000}`;
        entries.push({ aggregate: agg, commands: [0, 1, 2, 3].map((i) => ({ action: `${agg}.e${i}`, revision: 1 + (i % 2), payload: { p, k, i, text: "x".repeat(150), é: "漢😀" } })) });
      }
      await a.push(entries);
    }
    await a.forget({ queries: [{ aggregate: "user.u7" }] });
    const heap = () => { gc(); return performance.memory?.usedJSHeapSize ?? 0; };
    let peak = heap();
    const base = peak;
    const sampler = setInterval(() => { peak = Math.max(peak, heap()); }, 100);
    const t0 = performance.now();
    const blob = await new Response(a.export()).blob();
    const exportMs = performance.now() - t0;
    const exportPeak = peak - base;
    peak = heap();
    const t1 = performance.now();
    const b = await EventStore.import(to, blob.stream());
    const importMs = performance.now() - t1;
    clearInterval(sampler);
    const importPeak = peak - base;
    // Compared a page at a time, in position order.
    let same = 0, differ = null;
    const ia = a.events()[Symbol.asyncIterator](), ib = b.events()[Symbol.asyncIterator]();
    for (;;) {
      const [x, y] = await Promise.all([ia.next(), ib.next()]);
      if (x.done || y.done) { if (x.done !== y.done && !differ) differ = "lengths differ"; break; }
      if (JSON.stringify(x.value) !== JSON.stringify(y.value) && !differ) differ = [x.value, y.value];
      same += 1;
    }
    const counts = [await a.count(), await b.count()];
    a.close();
    b.close();
    return { bytes: blob.size, exportMs, importMs, exportPeak, importPeak, same, differ, counts };
  }, { from, to });
  assert.equal(r.differ, null, JSON.stringify(r.differ)?.slice(0, 500));
  assert.deepEqual(r.counts, [100_000, 100_000]);
  assert.equal(r.same, 100_000);
  console.log(`# export/import of 100,000 events (${(r.bytes / 1e6).toFixed(1)} MB): export ${r.exportMs.toFixed(0)} ms, peak JS heap +${(r.exportPeak / 1e6).toFixed(1)} MB; import ${r.importMs.toFixed(0)} ms, peak JS heap +${(r.importPeak / 1e6).toFixed(1)} MB`);
  // Streamed: what is alive (sampled after gc() every 100 ms) stays far
  // below the export's size.
  assert.ok(r.exportPeak < r.bytes / 2, `export peak heap ${r.exportPeak} for ${r.bytes} bytes`);
  assert.ok(r.importPeak < r.bytes / 2, `import peak heap ${r.importPeak} for ${r.bytes} bytes`);
});

test("a truncated or corrupt import writes nothing and names the line", { timeout: 120_000 }, async () => {
  const [from, to] = [uniqueName("trunc-from"), uniqueName("trunc-to")];
  const r = await page.evaluate(async ({ from, to }) => {
    const a = await EventStore.open(from);
    for (let p = 0; p < 30; p++) {
      await a.push([{ aggregate: `user.u${p % 3}`, commands: Array.from({ length: 400 }, (_, i) => ({ action: `user.u${p % 3}.x`, payload: { p, i } })) }]);
    }
    const text = await new Response(a.export()).text();
    a.close();
    const lines = text.split("\n").length - 1;
    // Cut in the middle of the last line: 11,999 whole lines, then half of one.
    const truncated = await errorOf(() => EventStore.import(to, text.slice(0, -30)));
    const afterTruncated = await indexedDB.databases().then((dbs) => dbs.some((d) => d.name === to));
    // A corrupt line early on.
    const corrupt = text.split("\n");
    corrupt[6] = corrupt[6].replace('"sequence":7', '"sequence":"seven"');
    const bad = await errorOf(() => EventStore.import(to, corrupt.join("\n")));
    const afterBad = await indexedDB.databases().then((dbs) => dbs.some((d) => d.name === to));
    // Into a store that holds events: refused, nothing touched.
    const full = await errorOf(() => EventStore.import(from, text));
    const kept = await (await EventStore.open(from)).count();
    return { lines, truncated, afterTruncated, bad, afterBad, full, kept };
  }, { from, to });
  assert.equal(r.lines, 12_000);
  assert.equal(r.truncated.code, "INVALID_ARGUMENT");
  assert.match(r.truncated.message, /line 12000/);
  assert.equal(r.afterTruncated, false, "the half-imported store was deleted");
  assert.equal(r.bad.code, "INVALID_ARGUMENT");
  assert.match(r.bad.message, /line 7/);
  assert.equal(r.afterBad, false);
  assert.equal(r.full.code, "INVALID_ARGUMENT");
  assert.equal(r.kept, 12_000);
});
