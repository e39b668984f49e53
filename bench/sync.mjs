// Sync benchmarks (issue 10), on loopback, with the reference server built from
// server/ and started here:
//
//   S1  a fresh device (the package in headless Chromium) pulls a 100,000-event
//       log from the server (SQLite), against appending the same log locally
//       in the same browser and run;
//   S2  10 devices pushing 1,000 events each at once through one server, on
//       SQLite and on PostgreSQL (a throwaway cluster); the devices are Node
//       HTTP clients speaking protocol v1 (docs/sync-protocol.md), not
//       browsers: ten browser devices would measure the 2 cores' contention
//       more than the server;
//   S3  latency from a push on one device to its delivery to a subscription on
//       another device (two stores in one Chromium, live sync on).
//
// `node bench/sync.mjs` prints the section; `--write` also puts it into
// BENCHMARKS.md (replacing its "## Sync" section); `--no-pg` skips PostgreSQL.
// bench/run.mjs (npm run bench) calls runSyncBench() and syncSection().
// Every load loop is bounded; every process started here is stopped.
import { chromium } from "playwright-core";
import { mkdtemp, rm, readFile, writeFile } from "node:fs/promises";
import { tmpdir, loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { serve, ROOT } from "../scripts/serve.mjs";
import { buildServer, startSyncServer, startPostgres, postgresBin } from "../scripts/sync-server.mjs";
import * as W from "./workload.js";

const LAUNCH_ARGS = [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
];
const PULL_PUSHES = 1000; // workload pushes of 100 events: 100,000 events
const DEVICES = 10;
const PER_DEVICE = 1000;
const LATENCY_SAMPLES = 100;
const LATENCY_GAP_MS = 40;

const TARGETS = { pullMs: 10_000, pullRatio: 3, p99: 250 };

// ---- protocol helpers (Node side) ---------------------------------------------------

async function post(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`POST ${url}: ${res.status} ${JSON.stringify(json.error ?? json).slice(0, 300)}`);
  return json;
}

/** Every event of the server's log (pulls of 1,000). */
async function pullAll(url) {
  const events = [];
  let after = 0;
  for (let i = 0; i < 10_000; i++) {
    const res = await fetch(`${url}/v1/pull?after=${after}&limit=1000`);
    const body = await res.json();
    if (res.status !== 200) throw new Error(`pull: ${res.status} ${JSON.stringify(body.error)}`);
    for (const it of body.items) if (it.type === "event") events.push(it);
    after = body.cursor;
    if (!body.more) return events;
  }
  throw new Error("pullAll: too many pulls");
}

/** Checks: `want` events, each id once, positions 1..n gap-free, sequences 1..n per aggregate. */
function checkLog(events, want) {
  const fails = [];
  if (events.length !== want) fails.push(`${events.length} events on the server, ${want} expected`);
  const ids = new Set();
  const heads = new Map();
  events.forEach((e, i) => {
    if (ids.has(e.id)) fails.push(`id ${e.id} twice`);
    ids.add(e.id);
    if (e.position !== i + 1) fails.push(`position ${e.position} at index ${i}`);
    const agg = e.aggregate.join(".");
    const next = (heads.get(agg) ?? 0) + 1;
    if (e.sequence !== next) fails.push(`${agg}: sequence ${e.sequence}, ${next} due`);
    heads.set(agg, next);
  });
  return fails.slice(0, 10);
}

const createdAt = 1767000000000;

/** Seeds the server with the workload's first `pushes` pushes, 1,000 events per request. */
async function seed(url, pushes) {
  let log;
  for (let p = 0; p < pushes; p += 10) {
    const events = [];
    for (let q = p; q < Math.min(pushes, p + 10); q++) {
      W.pushEvents(q).forEach((e, i) => events.push({
        id: `seed-${q}-${i}`, aggregate: e.aggregate, action: e.action, revision: 1,
        sequence: e.sequence, createdAt: createdAt + q, payload: e.payload, forgotten: false,
      }));
    }
    log = (await post(`${url}/v1/push`, log ? { log, events } : { events })).log;
  }
}

/** S2: `DEVICES` Node devices push `PER_DEVICE` events each at once, in pushes of `batch`. */
async function concurrentPushes(url, batch) {
  const { log } = await (await fetch(`${url}/v1/info`)).json();
  const device = async (d) => {
    const seq = new Map();
    for (let sent = 0; sent < PER_DEVICE; sent += batch) {
      const events = [];
      for (let i = sent; i < Math.min(PER_DEVICE, sent + batch); i++) {
        const aggregate = `dev${d}.a${i % 10}`;
        const sequence = (seq.get(aggregate) ?? 0) + 1;
        seq.set(aggregate, sequence);
        events.push({ id: `d${d}-${batch}-${i}`, aggregate, action: `${aggregate}.happened`, revision: 1, sequence,
          createdAt: createdAt + i, payload: { device: d, i, note: "x".repeat(120) }, forgotten: false });
      }
      // Each device's aggregates are its own: no conflicts; a refusal is a failure.
      const answer = await post(`${url}/v1/push`, { log, events });
      if (answer.results.some((r) => r.status !== "accepted")) throw new Error(`device ${d}: ${JSON.stringify(answer.results.find((r) => r.status !== "accepted"))}`);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: DEVICES }, (_, d) => device(d)));
  const ms = performance.now() - t0;
  const fails = checkLog(await pullAll(url), DEVICES * PER_DEVICE);
  return { ms, eventsPerSecond: (DEVICES * PER_DEVICE) / (ms / 1000), fails };
}

// ---- in the browser -------------------------------------------------------------------

/** S1 in the page: sync a fresh store until flushed; then append the same log locally. */
const pullInPage = async ([url, pushes, tag]) => {
  const mod = await import("/pkg/index.js");
  await mod.default();
  const W = await import("/bench/workload.js");
  const name = `sync-pull-${tag}`;
  await mod.EventStore.delete(name);
  const store = await mod.EventStore.open(name);
  const t0 = performance.now();
  const sync = store.sync({ url });
  await sync.flush();
  const pullMs = performance.now() - t0;
  sync.stop();
  const count = await store.count();
  const status = sync.status();
  const events = await store.filter({ queries: [{ aggregate: "user.u7" }] });
  const fails = [];
  if (count !== pushes * 100) fails.push(`pulled ${count} events, ${pushes * 100} expected`);
  if (status.pending !== 0 || status.error) fails.push(`status ${JSON.stringify({ ...status, error: status.error && String(status.error) })}`);
  events.forEach((e, i) => {
    if (e.sequence !== i + 1) fails.push(`user.u7: sequence ${e.sequence} at ${i}`);
    if (typeof e.remotePosition !== "number") fails.push(`user.u7#${e.sequence}: remotePosition ${e.remotePosition}`);
    const want = W.eventOf(7, e.sequence);
    if (want && W.canonical(want.payload) !== W.canonical(e.payload)) fails.push(`user.u7#${e.sequence}: payload differs`);
  });
  store.close();
  await mod.EventStore.delete(name);

  // The same log appended locally: the workload's pushes of 100 events, as bench case 1.
  const local = await mod.EventStore.open(`${name}-local`);
  const batches = Array.from({ length: pushes }, (_, p) => {
    const entries = [];
    let entry = null;
    for (const e of W.pushEvents(p)) {
      if (!entry || entry.aggregate !== e.aggregate) entries.push(entry = { aggregate: e.aggregate, commands: [] });
      entry.commands.push({ action: e.action, payload: e.payload });
    }
    return entries;
  });
  const t1 = performance.now();
  for (const entries of batches) await local.push(entries);
  const appendMs = performance.now() - t1;
  if ((await local.count()) !== pushes * 100) fails.push("local append: wrong count");
  local.close();
  await mod.EventStore.delete(`${name}-local`);
  return { pullMs, appendMs, fails: fails.slice(0, 10) };
};

/** S3, receiving device: subscribes and records arrival times (ms since the epoch, high resolution). */
const receiver = async ([url, tag]) => {
  const mod = await import("/pkg/index.js");
  await mod.default();
  const store = await mod.EventStore.open(`sync-latency-b-${tag}`);
  window.arrived = new Map();
  store.subscribe(undefined, (e) => { window.arrived.set(e.id, performance.timeOrigin + performance.now()); }, { fromPosition: "end" });
  window.sync = store.sync({ url });
  await window.sync.flush();
};

/** S3, sending device: one event at a time, `gap` ms apart; returns [id, sent at] pairs. */
const sender = async ([url, tag, n, gap]) => {
  const mod = await import("/pkg/index.js");
  await mod.default();
  const store = await mod.EventStore.open(`sync-latency-a-${tag}`);
  window.sync = store.sync({ url });
  await window.sync.flush();
  const sent = [];
  for (let i = 0; i < n; i++) {
    const at = performance.timeOrigin + performance.now();
    const [e] = await store.push([{ aggregate: `lat.a${i % 5}`, commands: [{ action: `lat.a${i % 5}.pinged`, payload: { i } }] }]);
    sent.push([e.id, at]);
    await new Promise((r) => setTimeout(r, gap));
  }
  await window.sync.flush();
  return sent;
};

const pct = (xs, p) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

// ---- the run --------------------------------------------------------------------------

/** Runs S1–S3; resolves to the results (errors recorded per case, never thrown). */
export async function runSyncBench({ log = console.log, pg = true } = {}) {
  const results = { date: new Date().toISOString(), loadStart: loadavg()[0], cases: {} };
  const record = async (id, fn) => {
    const started = performance.now();
    try {
      results.cases[id] = await fn();
    } catch (e) {
      results.cases[id] = { error: String(e.message ?? e).split("\n")[0], fails: [] };
    }
    const r = results.cases[id];
    log(`sync ${id}: ${r.error ? `ERROR ${r.error}` : JSON.stringify(r, (k, v) => (k === "samples" ? undefined : typeof v === "number" ? Math.round(v * 10) / 10 : v))} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  };

  buildServer({ quiet: true });
  const tmp = await mkdtemp(join(tmpdir(), "eventstore-sync-bench-"));
  const web = await serve();
  const profile = join(tmp, "profile");
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, { executablePath: "/usr/bin/chromium", headless: true, args: LAUNCH_ARGS });
    results.browser = context.browser()?.version() ?? null;
    const newPage = async () => {
      const page = await context.newPage();
      page.on("pageerror", (e) => log(`page error: ${e.message}`));
      await page.goto(`${web.url}/bench/page.html`);
      return page;
    };
    const sqlite = (name) => startSyncServer({ database: `sqlite://${join(tmp, name)}`, origins: [web.url] });

    // S1: a fresh device pulls 100,000 events.
    await record("pull100k", async () => {
      const server = await sqlite("pull.db");
      try {
        const t0 = performance.now();
        await seed(server.url, PULL_PUSHES);
        const seedMs = performance.now() - t0;
        const page = await newPage();
        const out = await withTimeout(page.evaluate(pullInPage, [server.url, PULL_PUSHES, Date.now().toString(36)]), 240_000, "pull 100k");
        await page.close();
        return { ...out, seedMs, ratio: out.pullMs / out.appendMs };
      } finally {
        await server.stop();
      }
    });

    // S2: 10 devices at once, SQLite then PostgreSQL.
    for (const batch of [100, 1000]) {
      await record(`push-sqlite-${batch}`, async () => {
        const server = await sqlite(`push-${batch}.db`);
        try { return await concurrentPushes(server.url, batch); } finally { await server.stop(); }
      });
    }
    if (pg && postgresBin()) {
      let cluster = null;
      try {
        cluster = await startPostgres();
        for (const batch of [100, 1000]) {
          await record(`push-pg-${batch}`, async () => {
            // A database of its own per case: the server creates its tables in it.
            const db = `bench_${batch}`;
            await createDatabase(cluster, db);
            const server = await startSyncServer({ database: cluster.url.replace(/\/postgres$/, `/${db}`) });
            try { return await concurrentPushes(server.url, batch); } finally { await server.stop(); }
          });
        }
      } catch (e) {
        results.cases["push-pg-100"] ??= { error: String(e.message ?? e).split("\n")[0], fails: [] };
      } finally {
        await cluster?.stop();
      }
    } else {
      results.pgSkipped = pg ? "PostgreSQL not installed (run scripts/setup.sh)" : "--no-pg";
    }

    // S3: push-to-delivery latency between two devices.
    await record("latency", async () => {
      const server = await sqlite("latency.db");
      try {
        const tag = Date.now().toString(36);
        const b = await newPage();
        const a = await newPage();
        await withTimeout(b.evaluate(receiver, [server.url, tag]), 30_000, "receiver");
        const sent = await withTimeout(a.evaluate(sender, [server.url, tag, LATENCY_SAMPLES, LATENCY_GAP_MS]), 120_000, "sender");
        await b.waitForFunction((n) => window.arrived.size >= n, LATENCY_SAMPLES, { timeout: 30_000 }).catch(() => {});
        const arrived = new Map(await b.evaluate(() => [...window.arrived]));
        const samples = [];
        const fails = [];
        for (const [id, at] of sent) {
          if (!arrived.has(id)) fails.push(`event ${id} never delivered`);
          else samples.push(arrived.get(id) - at);
        }
        await a.evaluate(() => window.sync.stop());
        await b.evaluate(() => window.sync.stop());
        await Promise.all([a.close(), b.close()]);
        return { p50: pct(samples, 50), p99: pct(samples, 99), max: Math.max(...samples), samples, fails: fails.slice(0, 10) };
      } finally {
        await server.stop();
      }
    });
  } finally {
    await context?.close().catch(() => {});
    await web.close();
    await rm(tmp, { recursive: true, force: true });
  }
  results.loadEnd = loadavg()[0];
  return results;
}

async function createDatabase(cluster, name) {
  // The server's pool needs the database to exist: create it with psql as the postgres user.
  const { spawnSync } = await import("node:child_process");
  const port = new URL(cluster.url).port;
  const out = spawnSync("runuser", ["-u", "postgres", "--", join(postgresBin(), "psql"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-c", `CREATE DATABASE ${name}`], { encoding: "utf8" });
  if (out.status !== 0) throw new Error(`CREATE DATABASE ${name}: ${out.stderr}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, fail) => { timer = setTimeout(() => fail(new Error(`timed out after ${ms / 1000} s: ${what}`)), ms); }),
  ]);
}

// ---- the report ------------------------------------------------------------------------

const ms = (v) => (typeof v === "number" ? (v >= 100 ? `${Math.round(v).toLocaleString("en-US")} ms` : `${v.toFixed(1)} ms`) : "–");
const rate = (v) => (typeof v === "number" ? `${Math.round(v).toLocaleString("en-US")} events/s` : "–");

/** Whether every case ran with its checks passing (targets missed are reported, not failed). */
export function syncFailed(results) {
  return Object.values(results.cases).some((r) => r.error || r.fails?.length);
}

/** The "## Sync" section of BENCHMARKS.md. */
export function syncSection(results) {
  const c = results.cases;
  const verdict = (r, met) => (!r || r.error ? "n/a" : r.fails?.length ? "checks failed" : met ? "yes" : "**no**");
  const cell = (r, text) => (!r ? "not run" : r.error ? `error: ${r.error}` : `${text}${r.fails?.length ? " †" : ""}`);
  const rows = [];
  const p = c.pull100k;
  rows.push(["S1", "fresh device pulls a 100,000-event log (SQLite server)", cell(p, ms(p?.pullMs)),
    `< ${TARGETS.pullMs / 1000} s`, verdict(p, p && p.pullMs < TARGETS.pullMs)]);
  rows.push(["S1", "appending the same log locally (1,000 pushes of 100)", cell(p, ms(p?.appendMs)), "", ""]);
  rows.push(["S1", "pull / local append", cell(p, p?.ratio?.toFixed(2) + "x"),
    `≤ ${TARGETS.pullRatio}x`, verdict(p, p && p.ratio <= TARGETS.pullRatio)]);
  for (const [db, label] of [["sqlite", "SQLite"], ["pg", "PostgreSQL"]]) {
    for (const batch of [100, 1000]) {
      const r = c[`push-${db}-${batch}`];
      rows.push(["S2", `10 devices × 1,000 events at once, pushes of ${batch.toLocaleString("en-US")}, ${label}`,
        cell(r, r && !r.error ? `${rate(r.eventsPerSecond)} (${ms(r.ms)})` : ""), "every event once, gap-free",
        !r ? (db === "pg" ? `not run${results.pgSkipped ? ` (${results.pgSkipped})` : ""}` : "n/a") : r.error ? "n/a" : r.fails.length ? "**no**" : "yes"]);
    }
  }
  const l = c.latency;
  rows.push(["S3", `push on one device → subscription on another, live sync (${LATENCY_SAMPLES} events, ${LATENCY_GAP_MS} ms apart)`,
    cell(l, `p50 ${ms(l?.p50)}, p99 ${ms(l?.p99)}, max ${ms(l?.max)}`), `p99 < ${TARGETS.p99} ms`, verdict(l, l && l.p99 < TARGETS.p99)]);
  const table = ["| case | what | result | target | met |", "| --- | --- | --- | --- | --- |",
    ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
  const fails = Object.entries(c).filter(([, r]) => r.fails?.length).map(([id, r]) => `- ${id}: ${r.fails.join("; ")}`);
  return `## Sync

Run by \`bench/sync.mjs\` (part of \`npm run bench\`; alone: \`node bench/sync.mjs --write\`) on
${results.date.slice(0, 10)}, Chromium ${results.browser ?? "?"}, load average ${results.loadStart?.toFixed(1)} → ${results.loadEnd?.toFixed(1)};
the reference server (\`target/server/eventstore-server\`) on loopback, SQLite in a temp dir
(WAL, \`synchronous=FULL\`) or a throwaway PostgreSQL cluster (\`fsync=off\`); one run each.

${table}

- S1: the server is seeded with the benchmark workload's 100,000 events (1,000 aggregates, 200-byte
  payloads) by Node in pushes of 1,000; a fresh store in a fresh page then runs
  \`store.sync({ url })\` and \`flush()\` (timed), and the same page appends the same events locally
  with \`push\` (100 per push, bench case 1's shape). Checked: the count, and aggregate \`user.u7\`'s
  sequences, payloads and remote positions.
- S2: the devices are Node HTTP clients speaking protocol v1, not browsers (ten browser devices on
  2 cores would measure the browsers); each pushes 1,000 events over 10 aggregates of its own, one
  request after the other, all 10 at once. Checked by pulling the whole log: 10,000 events, each id
  once, positions 1..10,000, every aggregate's sequences 1..n.
- S3: two stores (two devices) in one Chromium; the sender pushes one event every ${LATENCY_GAP_MS} ms,
  the receiver's \`subscribe\` records its arrival; both read the same clock
  (\`performance.timeOrigin + performance.now()\`).
${fails.length ? `\nFailed checks:\n\n${fails.join("\n")}\n` : ""}`;
}

/** Puts `section` into BENCHMARKS.md in place of its "## Sync" section (or before "## Workload"). */
export async function writeSyncSection(section) {
  const file = join(ROOT, "BENCHMARKS.md");
  let text = await readFile(file, "utf8");
  const start = text.indexOf("\n## Sync\n");
  if (start >= 0) {
    const next = text.indexOf("\n## ", start + 1);
    text = text.slice(0, start + 1) + section + (next >= 0 ? text.slice(next + 1) : "");
  } else {
    const at = text.indexOf("\n## Workload\n");
    text = at >= 0 ? `${text.slice(0, at + 1)}${section}\n${text.slice(at + 1)}` : `${text}\n${section}`;
  }
  await writeFile(file, text);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  const results = await runSyncBench({ pg: !argv.includes("--no-pg") });
  const section = syncSection(results);
  console.log(`\n${section}`);
  await writeFile(join(tmpdir(), "eventstore-sync-bench.json"), JSON.stringify(results, null, 1));
  if (argv.includes("--write")) await writeSyncSection(section);
  process.exit(syncFailed(results) ? 1 : 0);
}
