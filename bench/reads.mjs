// Ad hoc figures for the reads of issue 12 (not part of `npm run bench`):
// node bench/reads.mjs [events]  (needs `npm run build` first).
// A log of 100,000 events by default, pushed 100 at a time as 25 entries of
// 4 commands (the benchmark's workload shape), then each read timed.
import { setup, uniqueName } from "../tests/e2e/helpers.mjs";

const events = Number(process.argv[2] ?? 100_000);
const env = await setup();
try {
  const page = await env.newPage();
  const figures = await page.evaluate(async ({ name, events }) => {
    const time = async (f, runs = 5) => {
      const ms = [];
      let out;
      for (let i = 0; i < runs; i++) {
        const t = performance.now();
        out = await f();
        ms.push(performance.now() - t);
      }
      ms.sort((a, b) => a - b);
      return { ms: +ms[Math.floor(runs / 2)].toFixed(2), out: typeof out === "object" && out !== null ? out.length : out };
    };
    let store = await EventStore.open(name);
    for (let p = 0; p < events / 100; p++) {
      const entries = [];
      for (let e = 0; e < 25; e++) {
        const a = `user.u${(p * 25 + e) % 2000}`;
        entries.push({ aggregate: a, commands: [0, 1, 2, 3].map((i) => ({ action: `${a}.${i ? "changed" : "added"}`, payload: { i, text: "x".repeat(200) } })) });
      }
      await store.push(entries);
    }
    const [some] = await store.filter({ queries: [{ position: { from: Math.floor(events / 2) } }], limit: 1 });
    const f = {};
    f.forwardLimit20 = await time(() => store.filter({ limit: 20 }));
    f.reverseLimit20 = await time(() => store.filter({ reverse: true, limit: 20 }));
    f.reverseAggregateLimit20 = await time(() => store.filter({ queries: [{ aggregate: "user.u7" }], reverse: true, limit: 20 }));
    f.reverseAddedLimit20 = await time(() => store.filter({ queries: [{ subjects: "user.*.added" }], reverse: true, limit: 20 }));
    f.forwardAll = await time(() => store.filter({}), 3);
    f.reverseAll = await time(() => store.filter({ reverse: true }), 3);
    f.positionLast1000 = await time(() => store.filter({ queries: [{ position: { from: events - 999 } }] }));
    f.getById = await time(() => store.get(some.id));
    f.getMissingUuid = await time(() => store.get("0190a0a0-0000-7000-8000-000000000000"), 3);
    f.countAll = await time(() => store.count());
    f.countAggregate = await time(() => store.count({ queries: [{ aggregate: "user.u7" }] }));
    f.countAdded = await time(() => store.count({ queries: [{ subjects: "user.*.added" }] }), 3);
    f.filterAddedLength = await time(() => store.filter({ queries: [{ subjects: "user.*.added" }] }), 3);
    f.countChangedWildcard = await time(() => store.count({ queries: [{ subjects: "*.*.changed" }] }), 3);
    f.filterChangedWildcardLength = await time(() => store.filter({ queries: [{ subjects: "*.*.changed" }] }), 3);
    store.close();
    store = await EventStore.open(name, { upcasters: [{ action: "nothing.>", from: 1, to: 2, upcast: (p) => p }] });
    f.allWithUnmatchedUpcaster = await time(() => store.filter({}), 3);
    store.close();
    store = await EventStore.open(name, { upcasters: [{ action: "user.>", from: 1, to: 2, upcast: (p) => ({ ...p, v: 2 }) }] });
    f.allWithUpcasterOnEvery = await time(() => store.filter({}), 3);
    store.close();
    await EventStore.delete(name);
    return f;
  }, { name: uniqueName("reads-bench"), events });
  console.log(JSON.stringify({ events, ...figures }, null, 1));
} finally {
  await env.close();
}
