// The benchmark cases, run inside the page (bench/page.html). bench/run.mjs
// calls them one at a time through `window.bench`. Every case opens its
// database, runs the timed operation, then reads back (untimed) and checks
// what it got against the workload; nothing is kept between calls except the
// loaded implementation modules (and, for eventstore-wasm, the instantiated
// wasm module, as an app would keep it).
import * as W from "./workload.js";

const LOADERS = {
  eventstore: () => import("./impl/eventstore.js"),
  "eventstore-enc": () => import("./impl/eventstore.js?enc"),
  dexie: () => import("./impl/dexie.js"),
  raw: () => import("./impl/raw.js"),
};
const mods = {};

export const DB = {
  log10k: (key) => `bench-10k-${key}`,
  log100k: (key) => `bench-100k-${key}`,
  single: (key) => `bench-single-${key}`,
};
export const PUSHES_10K = 100;
export const PUSHES_100K = 1000;

const now = () => performance.now();
const str = (x) => (Array.isArray(x) ? x.join(".") : x);
const errText = (e) => `${e && e.code ? `[${e.code}] ` : ""}${e && e.message ? e.message : String(e)}`;

/** Runs `body(fails)`; returns its result plus the list of failed checks, or the error. */
async function safely(body) {
  const fails = [];
  try {
    const out = await body(fails);
    return { ...out, fails };
  } catch (e) {
    return { error: errText(e), stack: e && e.stack ? String(e.stack).split("\n").slice(0, 4).join(" | ") : undefined, fails };
  }
}

function mod(key) {
  const m = mods[key];
  if (!m) throw new Error(`implementation ${key} not loaded`);
  return m;
}

async function openFresh(m, name) {
  await m.destroy(name);
  await m.open(name);
}

// ---- checks ---------------------------------------------------------------

function fail(fails, msg) {
  if (fails.length < 50) fails.push(msg);
  else if (fails.length === 50) fails.push("… more failures not listed");
}

/** `got` must be the workload event `want` (aggregate, action, sequence, payload), not forgotten. */
function checkEvent(fails, label, got, want) {
  if (!got) return fail(fails, `${label}: event ${want.aggregate}#${want.sequence} missing`);
  const where = `${label}: ${want.aggregate}#${want.sequence}`;
  if (str(got.aggregate) !== want.aggregate) fail(fails, `${where}: aggregate ${JSON.stringify(got.aggregate)}`);
  if (str(got.action) !== want.action) fail(fails, `${where}: action ${JSON.stringify(got.action)}, want ${want.action}`);
  if (got.sequence !== want.sequence) fail(fails, `${where}: sequence ${got.sequence}`);
  if (got.forgotten) fail(fails, `${where}: forgotten is ${got.forgotten}`);
  if (W.canonical(got.payload) !== W.canonical(want.payload)) {
    fail(fails, `${where}: payload ${JSON.stringify(got.payload)?.slice(0, 120)} differs from ${JSON.stringify(want.payload).slice(0, 120)}`);
  }
}

/** Positions strictly increasing (numbers). */
function checkPositions(fails, label, events) {
  let last = -Infinity;
  for (let i = 0; i < events.length; i++) {
    const p = events[i].position;
    if (typeof p !== "number" || !(p > last)) {
      return fail(fails, `${label}: position ${JSON.stringify(p)} at index ${i} after ${last} (not increasing)`);
    }
    last = p;
  }
}

/** An aggregate's full history: `count` events, sequences 1..count, in order, all of that aggregate. */
function checkHistory(fails, label, aggregate, events, count) {
  if (!Array.isArray(events)) return fail(fails, `${label}: ${aggregate}: result is not an array`);
  if (events.length !== count) fail(fails, `${label}: ${aggregate}: ${events.length} events, want ${count}`);
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    if (str(e.aggregate) !== aggregate) return fail(fails, `${label}: ${aggregate}: event ${i} has aggregate ${str(e.aggregate)}`);
    if (e.sequence !== i + 1) return fail(fails, `${label}: ${aggregate}: event ${i} has sequence ${e.sequence}, want ${i + 1}`);
  }
  checkPositions(fails, `${label}: ${aggregate}`, events);
}

/** Reads the known event back through loadAggregate and checks it. */
async function checkKnown(m, fails, label, pushes) {
  const want = W.knownEvent(pushes);
  const history = await m.loadAggregate(want.aggregate);
  const a = Number(want.aggregate.slice("user.u".length));
  checkHistory(fails, `${label} read-back`, want.aggregate, history, W.aggregateCount(a, pushes));
  checkEvent(fails, `${label} read-back`, history.find((e) => e.sequence === want.sequence), want);
}

async function checkCount(m, fails, label, want) {
  const n = await m.countAll();
  if (n !== want) fail(fails, `${label} read-back: ${n} events in the log, want ${want}`);
}

// ---- harness entry points ---------------------------------------------------

/** Imports an implementation (and instantiates the wasm module for eventstore-wasm). */
export function load(key) {
  return safely(async () => {
    const t0 = now();
    mods[key] = await LOADERS[key]();
    await mods[key].ready();
    return { ms: now() - t0, memory: mods[key].memoryBytes() };
  });
}

/** Deletes the benchmark's databases of an implementation. */
export function cleanup(key) {
  return safely(async () => {
    const m = mod(key);
    for (const f of Object.values(DB)) await m.destroy(f(key));
    return {};
  });
}

/** Case 1: append 10,000 events, 100 per push, on a fresh database (kept for cases 3–5). */
export function appendLog(key) {
  return safely(async (fails) => {
    const m = mod(key);
    const name = DB.log10k(key);
    await openFresh(m, name);
    const batches = Array.from({ length: PUSHES_10K }, (_, p) => W.pushEvents(p));
    const written = [];
    const t0 = now();
    for (const b of batches) written.push(await m.appendBatch(b));
    const ms = now() - t0;
    written.forEach((n, p) => n !== W.EVENTS_PER_PUSH && fail(fails, `push ${p}: wrote ${n} events, want ${W.EVENTS_PER_PUSH}`));
    await checkCount(m, fails, "append", PUSHES_10K * W.EVENTS_PER_PUSH);
    await checkKnown(m, fails, "append", PUSHES_10K);
    // Cases 3 and 4 read this log folded, as an app finds it once its pushes paused
    // (the push-shape cases read it right after the appends too).
    const foldMs = m.unfoldedLeft ? await untilFolded(m, name, fails) : null;
    m.close();
    return { ms, foldMs };
  });
}

/** Case 2: 500 pushes of one event each (one transaction each), on a fresh database. */
export function singlePushes(key) {
  return safely(async (fails) => {
    const m = mod(key);
    const name = DB.single(key);
    await openFresh(m, name);
    const events = [];
    for (let p = 0; p < 5; p++) events.push(...W.pushEvents(p));
    let bad = 0;
    const t0 = now();
    for (const e of events) if ((await m.pushOne(e)) !== 1) bad++;
    const ms = now() - t0;
    if (bad) fail(fails, `${bad} pushes did not report 1 event written`);
    await checkCount(m, fails, "single pushes", events.length);
    const want = events[262];
    const history = await m.loadAggregate(want.aggregate);
    const a = Number(want.aggregate.slice("user.u".length));
    checkHistory(fails, "single pushes read-back", want.aggregate, history, W.aggregateCount(a, 5));
    checkEvent(fails, "single pushes read-back", history.find((e) => e.sequence === want.sequence), want);
    await m.destroy(name);
    return { ms };
  });
}

/** Case 3: 200 aggregate loads (full history each), one after the other; run r loads user.u(r+5i). */
export function aggregateLoads(key, run) {
  return safely(async (fails) => {
    const m = mod(key);
    await m.open(DB.log10k(key));
    const aggs = Array.from({ length: 200 }, (_, i) => (run + 5 * i) % W.AGGREGATES);
    const results = new Array(aggs.length);
    const t0 = now();
    for (let i = 0; i < aggs.length; i++) results[i] = await m.loadAggregate(W.aggName(aggs[i]));
    const ms = now() - t0;
    let events = 0;
    aggs.forEach((a, i) => {
      checkHistory(fails, "aggregate load", W.aggName(a), results[i], W.aggregateCount(a, PUSHES_10K));
      events += results[i]?.length ?? 0;
    });
    // One known event per run: the first loaded aggregate's last event.
    const a0 = aggs[0];
    const n0 = W.aggregateCount(a0, PUSHES_10K);
    const want = findEvent(a0, n0, PUSHES_10K);
    checkEvent(fails, "aggregate load", results[0]?.[n0 - 1], want);
    m.close();
    return { ms, events };
  });
}

/** The workload event of aggregate `a` with sequence `seq`, which must lie in the first `pushes` pushes. */
function findEvent(a, seq, pushes) {
  const e = W.eventOf(a, seq);
  if (!e || e.sequence !== seq || e.aggregate !== W.aggName(a) || seq > W.aggregateCount(a, pushes)) {
    throw new Error(`no event ${a}#${seq} in the workload`);
  }
  return e;
}

/** Case 4: filter user.*.added over the 10,000-event log. */
export function filterAdded(key) {
  return safely(async (fails) => {
    const m = mod(key);
    await m.open(DB.log10k(key));
    const t0 = now();
    const events = await m.filterAdded();
    const ms = now() - t0;
    const want = W.addedCount(PUSHES_10K);
    if (events.length !== want) fail(fails, `filter user.*.added: ${events.length} events, want ${want}`);
    const odd = events.find((e) => !/^user\.[^.]+\.added$/.test(str(e.action)));
    if (odd) fail(fails, `filter user.*.added: returned action ${str(odd.action)}`);
    checkPositions(fails, "filter user.*.added", events);
    const known = W.pushEvents(PUSHES_10K / 2)[10 * W.KINDS.length];
    checkEvent(fails, "filter user.*.added", events.find((e) => str(e.aggregate) === known.aggregate && e.sequence === known.sequence), known);
    m.close();
    return { ms, events: events.length };
  });
}

/** Case 5: user.u7.> on the 10,000-event ("10k") or the 100,000-event ("100k") log. */
export function prefixQuery(key, size) {
  return safely(async (fails) => {
    const m = mod(key);
    const pushes = size === "100k" ? PUSHES_100K : PUSHES_10K;
    await m.open(size === "100k" ? DB.log100k(key) : DB.log10k(key));
    const t0 = now();
    const events = await m.prefixQuery("user.u7");
    const ms = now() - t0;
    checkHistory(fails, `user.u7.> (${size})`, "user.u7", events, W.aggregateCount(7, pushes));
    const odd = events.find((e) => !str(e.action).startsWith("user.u7."));
    if (odd) fail(fails, `user.u7.> (${size}): returned action ${str(odd.action)}`);
    checkEvent(fails, `user.u7.> (${size})`, events[0], findEvent(7, 1, pushes));
    m.close();
    return { ms, events: events.length };
  });
}

/** Builds the 100,000-event log (1,000 pushes of 100); only the append calls are timed. */
export function build100k(key) {
  return safely(async (fails) => {
    const m = mod(key);
    const name = DB.log100k(key);
    await openFresh(m, name);
    let ms = 0;
    for (let p = 0; p < PUSHES_100K; p++) {
      const batch = W.pushEvents(p);
      const t0 = now();
      const n = await m.appendBatch(batch);
      ms += now() - t0;
      if (n !== W.EVENTS_PER_PUSH) fail(fails, `build 100k: push ${p} wrote ${n} events`);
    }
    const t0 = now();
    const foldMs = m.unfoldedLeft ? await untilFolded(m, name, fails) : null;
    const untilFoldedMs = foldMs == null ? null : now() - t0;
    await checkCount(m, fails, "build 100k", PUSHES_100K * W.EVENTS_PER_PUSH);
    await checkKnown(m, fails, "build 100k", PUSHES_100K);
    m.close();
    return { ms, foldMs: untilFoldedMs, memory: m.memoryBytes() };
  });
}

/**
 * A 100,000-event log of another push shape (1,000 pushes of `aggs` × `per`),
 * eventstore-wasm only: the append calls are timed, then the time until
 * folding caught up; the database is deleted after.
 */
export function build100kShape(key, aggs, per) {
  return safely(async (fails) => {
    const m = mod(key);
    const name = `bench-100k-shape-${aggs}x${per}-${key}`;
    await openFresh(m, name);
    let ms = 0;
    for (let p = 0; p < PUSHES_100K; p++) {
      const batch = W.shapeEvents(aggs, per, p);
      const t0 = now();
      await m.appendBatch(batch);
      ms += now() - t0;
    }
    const foldMs = m.unfoldedLeft ? await untilFolded(m, name, fails) : null;
    await checkCount(m, fails, `build 100k ${aggs}x${per}`, PUSHES_100K * aggs * per);
    await m.destroy(name);
    return { ms, foldMs };
  });
}

/**
 * Case 6, in a fresh page: import the implementation, open the 100k database
 * and load one aggregate. Timed from before the import to the loaded events.
 */
export function coldStart(key, aggregate) {
  return safely(async (fails) => {
    const t0 = now();
    const m = await LOADERS[key]();
    const t1 = now();
    await m.ready();
    const t2 = now();
    await m.open(DB.log100k(key));
    const t3 = now();
    const events = await m.loadAggregate(W.aggName(aggregate));
    const t4 = now();
    mods[key] = m;
    checkHistory(fails, "cold start", W.aggName(aggregate), events, W.aggregateCount(aggregate, PUSHES_100K));
    checkEvent(fails, "cold start", events[0], findEvent(aggregate, 1, PUSHES_100K));
    m.close();
    return { ms: t4 - t0, importMs: t1 - t0, initMs: t2 - t1, openMs: t3 - t2, loadMs: t4 - t3, memory: m.memoryBytes() };
  });
}

/** Case 8: stream all 100,000 events through a reducer; wasm memory before and after. */
export function streamAll(key) {
  return safely(async (fails) => {
    const m = mod(key);
    await m.ready();
    const memoryInit = m.memoryBytes();
    await m.open(DB.log100k(key));
    const memoryBefore = m.memoryBytes();
    const known = W.knownEvent(PUSHES_100K);
    let count = 0;
    let last = -Infinity;
    let disorder = null;
    let seen = null;
    let sum = 0;
    const t0 = now();
    await m.streamAll((e) => {
      count++;
      if (!(e.position > last) && !disorder) disorder = `position ${e.position} after ${last} at event ${count}`;
      last = e.position;
      sum += e.sequence;
      if (e.sequence === known.sequence && str(e.aggregate) === known.aggregate) seen = e;
    });
    const ms = now() - t0;
    const memoryAfter = m.memoryBytes();
    const want = PUSHES_100K * W.EVENTS_PER_PUSH;
    if (count !== want) fail(fails, `stream: reducer called ${count} times, want ${want}`);
    if (disorder) fail(fails, `stream: ${disorder}`);
    // Each aggregate holds sequences 1..100, so the sequences sum to 1000 * 5050.
    if (sum !== W.AGGREGATES * 5050) fail(fails, `stream: sequences sum to ${sum}, want ${W.AGGREGATES * 5050}`);
    checkEvent(fails, "stream", seen, known);
    m.close();
    return { ms, memoryInit, memoryBefore, memoryAfter };
  });
}

/** Case 7: forget one aggregate of the 100k log; read back that its payloads are gone and others kept. */
export function forget(key, aggregate) {
  return safely(async (fails) => {
    const m = mod(key);
    await m.open(DB.log100k(key));
    const name = W.aggName(aggregate);
    const t0 = now();
    const n = await m.forgetAggregate(name);
    const ms = now() - t0;
    const want = W.aggregateCount(aggregate, PUSHES_100K);
    if (n !== want) fail(fails, `forget ${name}: returned ${JSON.stringify(n)}, want ${want}`);
    const history = await m.loadAggregate(name);
    checkHistory(fails, `forget ${name} read-back`, name, history, want);
    const kept = history.filter((e) => e.payload !== null || e.forgotten !== true);
    if (kept.length) fail(fails, `forget ${name} read-back: ${kept.length} events still have a payload or forgotten !== true (first: #${kept[0].sequence} ${JSON.stringify(kept[0].payload)?.slice(0, 80)}, forgotten ${kept[0].forgotten})`);
    if (history[0] && str(history[0].action) !== `${name}.added`) fail(fails, `forget ${name} read-back: metadata lost, action ${str(history[0].action)}`);
    const other = (aggregate + 1) % W.AGGREGATES;
    const otherHistory = await m.loadAggregate(W.aggName(other));
    checkEvent(fails, `forget ${name}, neighbour`, otherHistory[0], findEvent(other, 1, PUSHES_100K));
    m.close();
    return { ms, erased: n };
  });
}

/**
 * Case 1s: append 10,000 events in 100 pushes of `aggs` aggregates × `per`
 * events each, on a fresh database; then (timed apart) 200 aggregate loads
 * right after the appends, and for eventstore-wasm the time until the
 * background fold has caught up and the same loads again.
 */
export function appendShape(key, aggs, per) {
  return safely(async (fails) => {
    const m = mod(key);
    const name = `bench-shape-${aggs}x${per}-${key}`;
    await openFresh(m, name);
    const batches = Array.from({ length: PUSHES_10K }, (_, p) => W.shapeEvents(aggs, per, p));
    const t0 = now();
    for (const b of batches) await m.appendBatch(b);
    const ms = now() - t0;
    const loads = async (label) => {
      const aggsLoaded = Array.from({ length: 200 }, (_, i) => (5 * i) % W.AGGREGATES);
      const results = [];
      const t = now();
      for (const a of aggsLoaded) results.push(await m.loadAggregate(W.aggName(a)));
      const took = now() - t;
      aggsLoaded.forEach((a, i) => checkHistory(fails, label, W.aggName(a), results[i], W.shapeCount(a, aggs, per, PUSHES_10K)));
      return took;
    };
    const added = async (label) => {
      const t = now();
      const events = await m.filterAdded();
      const took = now() - t;
      const want = W.shapeAddedCount(aggs, per, PUSHES_10K);
      if (events.length !== want) fail(fails, `${label}: user.*.added returned ${events.length} events, want ${want}`);
      checkPositions(fails, label, events);
      return took;
    };
    const tr = now();
    const loadsNow = await loads("loads right after");
    const addedNow = await added("user.*.added right after");
    const readsNow = now() - tr;
    let foldMs = null, loadsFolded = null, addedFolded = null;
    if (m.unfoldedLeft) {
      foldMs = await untilFolded(m, name, fails);
      // Time from the last push until folding caught up (the reads above ran meanwhile).
      foldMs += readsNow;
      loadsFolded = await loads("loads after folding");
      addedFolded = await added("user.*.added after folding");
    }
    await checkCount(m, fails, "shape append", PUSHES_10K * aggs * per);
    await m.destroy(name);
    return { ms, loadsNow, addedNow, foldMs, loadsFolded, addedFolded };
  });
}

/** Waits (polling, at most 120 s) until the store has folded every unfolded record; ms waited. */
async function untilFolded(m, name, fails) {
  const t = now();
  while ((await m.unfoldedLeft(name)) > 0) {
    if (now() - t > 120_000) { fail(fails, "not folded after 120 s"); break; }
    await new Promise((ok) => setTimeout(ok, 5));
  }
  return now() - t;
}

/** The floor: raw IndexedDB, one record per push of 100 events, no index (raw only). */
export function appendFloor(key) {
  return safely(async () => {
    const m = mod(key);
    const name = `bench-floor-${key}`;
    await m.openFloor(name);
    const batches = Array.from({ length: PUSHES_10K }, (_, p) => W.shapeEvents(100, 1, p));
    const t0 = now();
    for (const b of batches) await m.appendFloor(b);
    const ms = now() - t0;
    await m.closeFloor(name);
    return { ms };
  });
}
