// The npm package in pkg/ and the seed compliance cases of SPEC sections 3-4.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, access } from "node:fs/promises";
import { join } from "node:path";
import { setup, uniqueName, ROOT, TIMEOUT } from "./helpers.mjs";

let env, page;
before(async () => {
  env = await setup();
  page = await env.newPage({ load: false });
});
after(() => env?.close());

/** Opens a fresh store as the page global `store`. */
const freshStore = (prefix) =>
  page.evaluate(async (name) => {
    window.store?.close();
    window.store = await EventStore.open(name);
  }, uniqueName(prefix));

test("pkg/package.json describes an ESM package whose entry points exist", async () => {
  const pkg = JSON.parse(await readFile(join(ROOT, "pkg/package.json"), "utf8"));
  assert.equal(pkg.name, "eventstore-wasm");
  assert.equal(pkg.type, "module");
  const root = pkg.exports?.["."];
  assert.ok(root, "exports['.'] is set");
  const targets = [pkg.types, root.types, root.import ?? root.default];
  assert.ok(targets.every(Boolean), `types and exports['.'] import/types are set: ${JSON.stringify(targets)}`);
  for (const target of [...targets, "eventstore_wasm_bg.wasm"]) {
    await access(join(ROOT, "pkg", target)); // throws when missing
  }
  assert.match(root.types, /\.d\.ts$/);
  assert.equal(pkg.main, root.import.replace(/^\.\//, ""), "main is the self-initialising entry");
  assert.equal(pkg.module, pkg.main);
  for (const f of ["LICENSE", "README.md", pkg.main, pkg.types, "eventstore_wasm_bg.wasm", "eventstore_wasm.js"]) {
    assert.ok(pkg.files.includes(f), `files lists ${f}: ${JSON.stringify(pkg.files)}`);
  }
  assert.ok(pkg.sideEffects.includes(`./${pkg.main}`), "the entry (which patches EventStore) is a side effect");
  assert.equal(pkg.license, "MIT OR Apache-2.0");
  assert.ok(!JSON.stringify(pkg).includes("example.invalid"), "no placeholder URL");
  assert.ok(pkg.keywords?.length > 0, "keywords");
});

test("the entry exports the wasm initialiser as default, EventStore and the error helpers", { timeout: TIMEOUT }, async () => {
  const pkg = JSON.parse(await readFile(join(ROOT, "pkg/package.json"), "utf8"));
  const shape = await page.evaluate(async (entry) => {
    const mod = await import(entry);
    const before = { default: typeof mod.default, EventStore: typeof mod.EventStore };
    await mod.default();
    window.EventStore = mod.EventStore;
    return {
      ...before,
      open: typeof mod.EventStore.open,
      delete: typeof mod.EventStore.delete,
      EventStoreError: typeof mod.EventStoreError,
      isEventStoreError: typeof mod.isEventStoreError,
      matches: typeof mod.matches,
      codes: Object.keys(mod.ErrorCode),
      Event: "Event" in mod,
    };
  }, `/pkg/${pkg.exports["."].import.replace(/^\.\//, "")}`);
  assert.deepEqual(shape, {
    default: "function",
    EventStore: "function",
    open: "function",
    delete: "function",
    EventStoreError: "function",
    isEventStoreError: "function",
    matches: "function",
    codes: ["INVALID_SUBJECT", "INVALID_PAYLOAD", "INVALID_ARGUMENT", "SEQUENCE_MISMATCH", "QUOTA_EXCEEDED", "CLOSED", "VERSION_MISMATCH", "DATA_LOST", "STORAGE", "SYNC", "CONFLICT"],
    Event: false,
  });
});

test("one push of user.id, read back by pattern, array and string forms", { timeout: TIMEOUT }, async () => {
  await freshStore("seed");
  const r = await page.evaluate(async () => {
    const pushed = await store.push([
      { aggregate: ["user", "id"], commands: [{ action: "user.id.added", payload: { name: "Ada" } }, { action: ["user", "id", "removed"] }] },
    ]);
    const actions = async (subjects) => (await store.filter({ queries: [{ subjects }] })).map((e) => e.action.join("."));
    return {
      pushed,
      all: (await store.filter({})).map((e) => e.action.join(".")),
      deep: await actions("user.id.>"),
      deepArray: await actions(["user", "id", ">"]),
      stars: await actions("user.*.*"),
      starsArray: await actions(["user", "*", "*"]),
      exact: await actions("user.id.added"),
      exactArray: await actions(["user", "id", "added"]),
      everything: await actions(">"),
      noPrefixMatch: await actions("user.id"),
      tooShort: await actions("user.*"),
      other: await actions("user.other.>"),
    };
  });
  const both = ["user.id.added", "user.id.removed"];
  assert.equal(r.pushed.length, 2);
  assert.deepEqual(r.pushed.map((e) => e.aggregate), [["user", "id"], ["user", "id"]]);
  assert.deepEqual(r.pushed.map((e) => e.sequence), [1, 2]);
  assert.deepEqual(r.pushed.map((e) => e.payload), [{ name: "Ada" }, null], "payload kept; omitted payload is null");
  assert.deepEqual(r.all, both, "filter({}) returns all");
  assert.deepEqual(r.deep, both, "user.id.>");
  assert.deepEqual(r.deepArray, both, "['user','id','>']");
  assert.deepEqual(r.stars, both, "user.*.*");
  assert.deepEqual(r.starsArray, both, "['user','*','*']");
  assert.deepEqual(r.exact, ["user.id.added"], "user.id.added");
  assert.deepEqual(r.exactArray, ["user.id.added"], "['user','id','added']");
  assert.deepEqual(r.everything, both, ">");
  assert.deepEqual(r.noPrefixMatch, [], "a pattern without wildcards is no prefix match");
  assert.deepEqual(r.tooShort, [], "user.* matches two-token actions only");
  assert.deepEqual(r.other, []);
});

test("events have exactly the documented shape", { timeout: TIMEOUT }, async () => {
  await freshStore("shape");
  const r = await page.evaluate(async () => {
    const before = Date.now();
    const payload = { s: "é漢😀", n: -1.5, big: 2 ** 53 - 1, a: [1, null, true, { x: [] }], o: {} };
    const pushed = await store.push([
      { aggregate: "user.A", commands: [{ action: "user.A.added", revision: 7, payload }, { action: "user.A.x", payload: "text" }] },
    ]);
    return { before, after: Date.now(), payload, pushed, read: await store.filter({}) };
  });
  const keys = ["action", "aggregate", "createdAt", "forgotten", "id", "payload", "position", "remotePosition", "revision", "sequence"];
  for (const e of r.pushed) {
    assert.deepEqual(Object.keys(e).sort(), keys, `keys of ${JSON.stringify(e)}`);
    assert.equal(typeof e.id, "string");
    assert.match(e.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, "a UUIDv7");
    assert.equal(parseInt(e.id.replace(/-/g, "").slice(0, 12), 16), e.createdAt, "its time is createdAt");
    assert.deepEqual(e.aggregate, ["user", "A"]);
    assert.ok(Number.isInteger(e.position) && e.position > 0, `position ${e.position}`);
    assert.ok(Number.isInteger(e.createdAt), `createdAt ${e.createdAt}`);
    assert.ok(e.createdAt >= r.before - 1 && e.createdAt <= r.after + 1, `createdAt ${e.createdAt} within [${r.before}, ${r.after}]`);
    assert.equal(e.forgotten, false);
  }
  const [a, b] = r.pushed;
  assert.deepEqual(a.action, ["user", "A", "added"]);
  assert.equal(a.revision, 7);
  assert.equal(b.revision, 1, "default revision is 1");
  assert.deepEqual(a.payload, r.payload, "payload round-trips");
  assert.equal(b.payload, "text");
  assert.equal(a.createdAt, b.createdAt, "one push shares createdAt");
  assert.notEqual(a.id, b.id);
  assert.ok(b.position > a.position);
  assert.deepEqual(r.read, r.pushed, "filter returns what push returned");
});

test("expectedSequence 0 on a new aggregate succeeds, 2 fails with SEQUENCE_MISMATCH", { timeout: TIMEOUT }, async () => {
  await freshStore("expected");
  const r = await page.evaluate(async () => ({
    ok: await store.push([{ aggregate: "user.new", expectedSequence: 0, commands: [{ action: "user.new.added" }] }]),
    err: await errorOf(() => store.push([{ aggregate: "user.x", expectedSequence: 2, commands: [{ action: "user.x.added" }] }])),
    x: await store.filter({ queries: [{ aggregate: "user.x" }] }),
  }));
  assert.deepEqual(r.ok.map((e) => e.sequence), [1]);
  assert.equal(r.err?.code, "SEQUENCE_MISMATCH", JSON.stringify(r.err));
  assert.equal(r.err.isError, true);
  assert.deepEqual(r.err.aggregate, ["user", "x"]);
  assert.equal(r.err.expected, 2);
  assert.equal(r.err.actual, 0);
  assert.deepEqual(r.x, []);
});

test("two aggregates in one push: sequences 1..3 each, increasing positions", { timeout: TIMEOUT }, async () => {
  await freshStore("two");
  const pushed = await page.evaluate(() =>
    store.push(
      ["A", "B"].map((id) => ({
        aggregate: ["user", id],
        commands: [1, 2, 3].map((n) => ({ action: `user.${id}.step${n}`, payload: { n } })),
      })),
    ),
  );
  assert.deepEqual(
    pushed.map((e) => `${e.aggregate.join(".")}#${e.sequence}`),
    ["user.A#1", "user.A#2", "user.A#3", "user.B#1", "user.B#2", "user.B#3"],
    "push order",
  );
  for (let i = 1; i < pushed.length; i++) assert.ok(pushed[i].position > pushed[i - 1].position, "positions increase");
  assert.equal(new Set(pushed.map((e) => e.createdAt)).size, 1);
});

test("filter: limit, OR-ed queries, sequence and createdAt ranges, aggregate pattern", { timeout: TIMEOUT }, async () => {
  await freshStore("filter");
  const r = await page.evaluate(async () => {
    const cmds = (id, n) => Array.from({ length: n }, (_, i) => ({ action: `user.${id}.e${i + 1}` }));
    const first = await store.push([{ aggregate: "user.A", commands: cmds("A", 5) }, { aggregate: "team.T", commands: [{ action: "team.T.made" }] }]);
    for (let i = 0; Date.now() <= first[0].createdAt && i < 1000; i++) await new Promise((ok) => setTimeout(ok, 1));
    const second = await store.push([{ aggregate: "user.B", commands: cmds("B", 2) }]);
    const tags = (events) => events.map((e) => `${e.aggregate.join(".")}#${e.sequence}`);
    const f = async (filter) => tags(await store.filter(filter));
    const t1 = first[0].createdAt, t2 = second[0].createdAt;
    return {
      t1, t2,
      all: await f({ queries: [] }),
      limit: await f({ limit: 2 }),
      limitZero: await f({ limit: 0 }),
      limitMerged: await f({ queries: [{ aggregate: "user.B" }, { aggregate: "user.A" }], limit: 3 }),
      ored: await f({ queries: [{ subjects: "user.A.e2" }, { aggregate: "user.A", sequence: { from: 2, to: 3 } }, { subjects: "team.>" }] }),
      seq: await f({ queries: [{ aggregate: "user.A", sequence: { from: 2, to: 4 } }] }),
      seqFrom: await f({ queries: [{ aggregate: "user.A", sequence: { from: 4 } }] }),
      seqTo: await f({ queries: [{ aggregate: "user.A", sequence: { to: 2 } }] }),
      createdFirst: await f({ queries: [{ createdAt: { from: t1, to: t2 } }] }),
      createdSecond: await f({ queries: [{ createdAt: { from: t2 } }] }),
      createdBefore: await f({ queries: [{ createdAt: { to: t1 } }] }),
      aggStar: await f({ queries: [{ aggregate: "user.*" }] }),
      aggArray: await f({ queries: [{ aggregate: ["team", ">"] }] }),
      aggAndSubject: await f({ queries: [{ aggregate: "user.*", subjects: "*.*.e2" }] }),
    };
  });
  const A = (...n) => n.map((s) => `user.A#${s}`);
  const B = (...n) => n.map((s) => `user.B#${s}`);
  assert.ok(r.t2 > r.t1, `createdAt of the later push ${r.t2} > ${r.t1}`);
  assert.deepEqual(r.all, [...A(1, 2, 3, 4, 5), "team.T#1", ...B(1, 2)]);
  assert.deepEqual(r.limit, A(1, 2), "limit 2");
  assert.deepEqual(r.limitZero, [], "limit 0");
  assert.deepEqual(r.limitMerged, A(1, 2, 3), "limit applies after merging, in position order");
  assert.deepEqual(r.ored, [...A(2), "team.T#1"], "OR-ed, event matched twice returned once");
  assert.deepEqual(r.seq, A(2, 3), "sequence from inclusive, to exclusive");
  assert.deepEqual(r.seqFrom, A(4, 5));
  assert.deepEqual(r.seqTo, A(1));
  assert.deepEqual(r.createdFirst, [...A(1, 2, 3, 4, 5), "team.T#1"], "createdAt [t1, t2)");
  assert.deepEqual(r.createdSecond, B(1, 2), "createdAt from t2");
  assert.deepEqual(r.createdBefore, [], "createdAt to t1 exclusive");
  assert.deepEqual(r.aggStar, [...A(1, 2, 3, 4, 5), ...B(1, 2)], "aggregate user.*");
  assert.deepEqual(r.aggArray, ["team.T#1"], "aggregate ['team','>']");
  assert.deepEqual(r.aggAndSubject, [...A(2), ...B(2)], "criteria of one query are AND-ed");
});

test("filter with a reducer: called per event in order, resolves undefined; a throw rejects", { timeout: TIMEOUT }, async () => {
  await freshStore("reducer");
  const r = await page.evaluate(async () => {
    await store.push([{ aggregate: "c.1", commands: [1, 2, 3, 4].map((n) => ({ action: "c.1.inc", payload: n })) }]);
    const seen = [];
    const result = await store.filter({ queries: [{ subjects: "c.>" }] }, (event) => { seen.push(event); });
    const thrown = new Error("reducer says no");
    let calls = 0;
    let caught;
    try {
      await store.filter({}, () => { calls++; throw thrown; });
    } catch (e) {
      caught = e;
    }
    return {
      resultIsUndefined: result === undefined,
      seen,
      plain: await store.filter({ queries: [{ subjects: "c.>" }] }),
      sameError: caught === thrown,
      caughtMessage: String(caught?.message ?? caught),
      calls,
      usable: (await store.filter({})).length,
    };
  });
  assert.equal(r.resultIsUndefined, true, "the promise resolves to undefined");
  assert.deepEqual(r.seen, r.plain, "the reducer sees the same events, in order");
  assert.deepEqual(r.seen.map((e) => e.payload), [1, 2, 3, 4]);
  assert.equal(r.sameError, true, `rejects with the reducer's own error, got: ${r.caughtMessage}`);
  assert.equal(r.calls, 1, "filtering stops at the throw");
  assert.equal(r.usable, 4, "the store stays usable");
});

test("push([]) returns [] and writes nothing", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("empty");
  const r = await page.evaluate(async (name) => {
    const store = await EventStore.open(name);
    const before = await rawCount(name);
    const result = await store.push([]);
    const out = { result, before, after: await rawCount(name), events: await store.filter({}) };
    store.close();
    return out;
  }, name);
  assert.deepEqual(r.result, []);
  assert.equal(r.after, r.before);
  assert.deepEqual(r.events, []);
});

test("the same aggregate twice in one push: sequenced in order, each expectedSequence checked at its point", { timeout: TIMEOUT }, async () => {
  await freshStore("twice");
  const r = await page.evaluate(async () => {
    const ok = await store.push([
      { aggregate: "acc.1", expectedSequence: 0, commands: [{ action: "acc.1.opened" }, { action: "acc.1.deposited" }] },
      { aggregate: "acc.2", commands: [{ action: "acc.2.opened" }] },
      { aggregate: "acc.1", expectedSequence: 2, commands: [{ action: "acc.1.withdrawn" }] },
    ]);
    const err = await errorOf(() =>
      store.push([
        { aggregate: "acc.1", expectedSequence: 3, commands: [{ action: "acc.1.closed" }] },
        { aggregate: "acc.1", expectedSequence: 3, commands: [{ action: "acc.1.reopened" }] },
      ]),
    );
    return { ok, err, count: (await store.filter({})).length };
  });
  assert.deepEqual(
    r.ok.map((e) => `${e.action.join(".")}#${e.sequence}`),
    ["acc.1.opened#1", "acc.1.deposited#2", "acc.2.opened#1", "acc.1.withdrawn#3"],
  );
  assert.equal(r.err?.code, "SEQUENCE_MISMATCH", JSON.stringify(r.err));
  assert.deepEqual(r.err.aggregate, ["acc", "1"]);
  assert.equal(r.err.expected, 3);
  assert.equal(r.err.actual, 4, "the second entry sees the sequence reached by the first");
  assert.equal(r.count, 4, "the failed call wrote nothing");
});
