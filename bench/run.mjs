// Benchmark driver: eventstore-wasm vs Dexie vs hand-written IndexedDB on the
// same event-log workload, in one headless Chromium session (Playwright), then
// in Firefox ESR and WebKitGTK (W3C WebDriver, bench/engines.mjs).
//
//   node bench/run.mjs                 all three implementations, rewrites BENCHMARKS.md
//   node bench/run.mjs --impl=dexie,raw --runs=3 --no-write   (debugging the harness)
//
// Options: --impl=eventstore,dexie,raw  --runs=N (timed runs of the cheap cases,
// default 5)  --engines=firefox,webkit (the other engines to run after Chromium;
// --engines= for none)  --no-sync (skip the sync cases, bench/sync.mjs)  --write / --no-write (BENCHMARKS.md; default: write when
// all three implementations and both other engines were requested)  --cpuprofile=DIR (a V8 CPU
// profile of each case run).
// Exit code 1 when a read-back check failed or a case errored; targets missed
// are reported, not failed.
import { chromium } from "playwright-core";
import { mkdtemp, rm, readFile, writeFile, mkdir, readdir } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { tmpdir, cpus, totalmem, loadavg, type as osType, release as osRelease } from "node:os";
import { join } from "node:path";
import { serve, ROOT } from "../scripts/serve.mjs";
import { runEngines, engineTables, engineDetails, engineFailures, OTHER_ENGINES } from "./engines.mjs";
import { runSyncBench, syncSection, syncFailed } from "./sync.mjs";

// ---- options ------------------------------------------------------------------

const ALL = ["eventstore", "dexie", "raw"];
/** Run by default beside ALL, in cases 1, 3 and 4 only: eventstore-wasm with { encryption: true }. */
const ENC = "eventstore-enc";
const NAMES = { eventstore: "eventstore-wasm", dexie: "Dexie", raw: "raw IndexedDB", [ENC]: "eventstore-wasm, encrypted" };
const argv = process.argv.slice(2);
const opt = (name) => argv.find((a) => a === `--${name}` || a.startsWith(`--${name}=`))?.split("=")[1] ?? (argv.includes(`--${name}`) ? "" : undefined);
const requested = (opt("impl") ?? [...ALL, ENC].join(",")).split(",").filter(Boolean);
for (const k of requested) if (![...ALL, ENC].includes(k)) throw new Error(`--impl: unknown implementation ${k} (known: ${[...ALL, ENC].join(", ")})`);
// --cases=1,3,4: only these of cases 1-4 (then nothing after case 4).
const CASES = opt("cases")?.split(",").filter(Boolean) ?? null;
const wantCase = (id) => !CASES || CASES.includes(id);
const RUNS = Math.max(1, Math.min(20, Number(opt("runs") ?? 5)));
const RUNS_100K = Math.max(1, Math.min(RUNS, 3)); // cold start, stream, forget
const RUNS_PREFIX = Math.max(RUNS, 7); // the query is short: more runs for a steadier median
const ENGINES = (opt("engines") ?? OTHER_ENGINES.join(",")).split(",").filter(Boolean);
for (const e of ENGINES) if (!OTHER_ENGINES.includes(e)) throw new Error(`--engines: unknown engine ${e} (known: ${OTHER_ENGINES.join(", ")})`);
const WRITE = argv.includes("--no-write") ? false
  : argv.includes("--write") || (ALL.every((k) => requested.includes(k)) && !CASES && OTHER_ENGINES.every((e) => ENGINES.includes(e)));

const START = Date.now();
const SOFT_LIMIT_MS = 5.5 * 60e3; // past this, optional runs (beyond the first 3) are skipped
const HARD_LIMIT_MS = 7.3 * 60e3; // past this, remaining cases are skipped
const elapsed = () => Date.now() - START;
const log = (...a) => console.log(`[bench ${(elapsed() / 1000).toFixed(1).padStart(6)}s]`, ...a);

const LAUNCH_ARGS = [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
];

// ---- results --------------------------------------------------------------------

/** results[caseId][impl] = { runs: [ms], extra: [per-run info], fails: [..], errors: [..], skipped } */
const results = {};
const slot = (c, k) => ((results[c] ??= {})[k] ??= { runs: [], extra: [], fails: [], errors: [] });
function record(c, k, res) {
  const s = slot(c, k);
  if (res.error) s.errors.push(res.error + (res.stack ? `  (${res.stack})` : ""));
  else if (typeof res.ms === "number") s.runs.push(res.ms);
  s.extra.push(res);
  for (const f of res.fails ?? []) if (!s.fails.includes(f) && s.fails.length < 30) s.fails.push(f);
  return res;
}
const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const med = (c, k) => median(results[c]?.[k]?.runs ?? []);
const medOf = (c, k, field) => median((results[c]?.[k]?.extra ?? []).filter((x) => !x.error && typeof x[field] === "number").map((x) => x[field]));
const ok = (c, k) => {
  const s = results[c]?.[k];
  return !!s && s.runs.length > 0 && !s.errors.length && !s.fails.length;
};

// ---- browser plumbing -----------------------------------------------------------

let context, url, closeServer, profileDir;
const loaded = new Set();
const loadErrors = {};

async function newBenchPage() {
  const page = await context.newPage();
  page.on("pageerror", (e) => log(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") log(`console error: ${m.text()}`); });
  await page.goto(`${url}/bench/page.html`);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
  return page;
}

/** --cpuprofile=DIR: a V8 CPU profile of every case run, DIR/<case>-<impl>-<n>.cpuprofile
 * (open in Chromium's DevTools; build with `wasm-pack build --profiling` for wasm names). */
const CPUPROFILE = opt("cpuprofile") || null;
const profiled = {};
async function startProfile(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
  await cdp.send("Profiler.start");
  return cdp;
}
async function stopProfile(cdp, name) {
  const { profile } = await cdp.send("Profiler.stop");
  await cdp.detach().catch(() => {});
  await mkdir(CPUPROFILE, { recursive: true });
  const n = (profiled[name] = (profiled[name] ?? 0) + 1);
  await writeFile(join(CPUPROFILE, `${name}-${n}.cpuprofile`), JSON.stringify(profile));
}

/** Calls window.bench[fn](...args) in the page, bounded by `timeoutMs`. */
async function call(page, fn, args, timeoutMs) {
  let timer;
  const timeout = new Promise((_, fail) => { timer = setTimeout(() => fail(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs); });
  try {
    return await Promise.race([page.evaluate(([f, a]) => window.bench[f](...a), [fn, args]), timeout]);
  } catch (e) {
    return { error: `harness: ${fn}: ${String(e.message).split("\n")[0]}`, fatal: true, fails: [] };
  } finally {
    clearTimeout(timer);
  }
}

/** Loads the implementations into a page; returns the keys that loaded. */
async function loadImpls(page, keys) {
  const ready = [];
  for (const k of keys) {
    const res = await call(page, "load", [k], 60_000);
    if (res.error) {
      loadErrors[k] ??= res.error;
      log(`${NAMES[k]}: could not load: ${res.error}`);
    } else ready.push(k);
  }
  return ready;
}

/** A page for a sequence of cases; replaced (and its implementations reloaded) after a fatal error. */
class Session {
  constructor(keys) { this.keys = keys; }
  async start() {
    this.page = await newBenchPage();
    this.ready = await loadImpls(this.page, this.keys);
    return this;
  }
  async run(caseId, key, fn, args, timeoutMs) {
    if (!this.ready.includes(key)) return null;
    const cdp = CPUPROFILE ? await startProfile(this.page) : null;
    const res = record(caseId, key, await call(this.page, fn, args, timeoutMs));
    if (cdp) await stopProfile(cdp, `${caseId}-${key}`);
    const tag = res.error ? `ERROR ${res.error}` : `${fmtMs(res.ms)}${res.fails?.length ? `  (${res.fails.length} failed checks)` : ""}`;
    log(`${caseId.padEnd(11)} ${NAMES[key].padEnd(16)} ${tag}`);
    if (res.fatal) {
      log("replacing the page after a fatal error");
      await this.page.close({ runBeforeUnload: false }).catch(() => {});
      await this.start();
    }
    return res;
  }
  async close() { await this.page.close({ runBeforeUnload: false }).catch(() => {}); }
}

// ---- formatting --------------------------------------------------------------------

function fmtMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "–";
  return ms >= 100 ? `${Math.round(ms).toLocaleString("en-US")} ms` : `${ms.toFixed(1)} ms`;
}
const fmtX = (x) => (typeof x === "number" && Number.isFinite(x) ? `${x.toFixed(2)}x` : "–");
const fmtMiB = (b) => (typeof b === "number" ? `${(b / 1048576).toFixed(2)} MiB` : "–");
const fmtKiB = (b) => (typeof b === "number" ? `${(b / 1024).toFixed(1)} KiB` : "–");

// ---- case 9: package size ------------------------------------------------------------

async function packageSize() {
  // Everything the browser loads: the module, its glue and the glue's snippets.
  const files = ["pkg/eventstore_wasm_bg.wasm", "pkg/eventstore_wasm.js"];
  for (const dir of await readdir(join(ROOT, "pkg/snippets")).catch(() => [])) {
    for (const f of await readdir(join(ROOT, "pkg/snippets", dir))) files.push(`pkg/snippets/${dir}/${f}`);
  }
  const out = { files: {}, gzip: 0, raw: 0 };
  for (const f of files) {
    const buf = await readFile(join(ROOT, f));
    const gz = gzipSync(buf, { level: 9 }).length;
    out.files[f] = { raw: buf.length, gzip: gz };
    out.gzip += gz;
    out.raw += buf.length;
  }
  return out;
}

// ---- the run ------------------------------------------------------------------------------

const rotate = (keys, r) => keys.map((_, i) => keys[(i + r) % keys.length]);
const wantRun = (r, min = 3) => r < min || elapsed() < SOFT_LIMIT_MS;
const inTime = () => elapsed() < HARD_LIMIT_MS;
const skipped = [];
const skip = (what) => { skipped.push(what); log(`skipped (time budget): ${what}`); };

const info = { size: null, sizeError: null, browser: null, userAgent: null, loadStart: loadavg(), loadEnd: null };

async function main() {
  try {
    info.size = await packageSize();
  } catch (e) {
    info.sizeError = e.message;
  }

  ({ url, close: closeServer } = await serve());
  profileDir = await mkdtemp(join(tmpdir(), "eventstore-bench-"));
  // A persistent context on a fresh temporary profile: IndexedDB lives on disk
  // as for a user (an incognito context would keep it in memory).
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: "/usr/bin/chromium", headless: true, args: LAUNCH_ARGS,
  });
  info.browser = context.browser()?.version() ?? null;

  const sess = await new Session(requested).start();
  info.userAgent = await sess.page.evaluate(() => navigator.userAgent);
  log(`Chromium ${info.browser}; implementations: ${sess.ready.map((k) => NAMES[k]).join(", ") || "none"}`);
  // The encrypted store runs cases 1, 3 and 4 (issue 11's figures) only.
  const all = sess.ready;
  const keys = all.filter((k) => k !== ENC);

  // The order of round r of cases 1, 3 and 4: the peers rotate, and the
  // encrypted store runs next to the unencrypted one, after it in even rounds
  // and before it in odd ones. A run right after a peer's (10,000 records with
  // their index entries, which LevelDB likely compacts meanwhile) is 15–20 % slower
  // than one after eventstore-wasm's; rotating the encrypted store with the
  // others put it after raw IndexedDB or Dexie in every round, and the
  // encrypted / unencrypted ratio carried that on one side only.
  const order = (r) => {
    const o = rotate(keys, r);
    if (!all.includes(ENC)) return o;
    const i = o.indexOf("eventstore");
    if (i < 0) o.push(ENC);
    else o.splice(r % 2 ? i : i + 1, 0, ENC);
    return o;
  };

  // Cases 1–4 and 5 on the 10k log: interleaved runs, rotating the order.
  for (let r = 0; r < RUNS && inTime() && wantCase("1"); r++) {
    if (!wantRun(r)) { skip(`case 1 runs ${r + 1}..${RUNS}`); break; }
    for (const k of order(r)) await sess.run("append", k, "appendLog", [k], 180_000);
  }
  // Case 1s: the push shapes of issue 9, and the floor (raw, one record per push).
  for (let r = 0; r < RUNS && inTime() && !CASES; r++) {
    if (!wantRun(r)) { skip(`case 1s runs ${r + 1}..${RUNS}`); break; }
    for (const [aggs, per] of SHAPES) {
      for (const k of rotate(keys, r)) await sess.run(`shape${aggs}x${per}`, k, "appendShape", [k, aggs, per], 180_000);
    }
    if (keys.includes("raw")) await sess.run("floor", "raw", "appendFloor", ["raw"], 60_000);
  }
  for (let r = 0; r < RUNS && inTime() && wantCase("2"); r++) {
    if (!wantRun(r)) { skip(`case 2 runs ${r + 1}..${RUNS}`); break; }
    for (const k of rotate(keys, r)) await sess.run("single", k, "singlePushes", [k], 120_000);
  }
  for (let r = 0; r < RUNS && inTime() && wantCase("3"); r++) {
    if (!wantRun(r)) { skip(`case 3 runs ${r + 1}..${RUNS}`); break; }
    for (const k of order(r)) await sess.run("loads", k, "aggregateLoads", [k, r], 120_000);
  }
  for (let r = 0; r < RUNS && inTime() && wantCase("4"); r++) {
    if (!wantRun(r)) { skip(`case 4 runs ${r + 1}..${RUNS}`); break; }
    for (const k of order(r)) await sess.run("added", k, "filterAdded", [k], 60_000);
  }
  if (all.includes(ENC)) await call(sess.page, "cleanup", [ENC], 60_000);
  if (CASES) {
    await sess.close();
    return;
  }
  for (let r = 0; r < RUNS_PREFIX && inTime(); r++) {
    if (!wantRun(r)) { skip(`case 5 (10k) runs ${r + 1}..${RUNS_PREFIX}`); break; }
    for (const k of rotate(keys, r)) await sess.run("prefix10k", k, "prefixQuery", [k, "10k"], 30_000);
  }

  // The 100k logs: built once per implementation, reused by cases 5, 6, 7, 8.
  const built = [];
  for (const k of keys) {
    if (!inTime()) { skip(`building the 100k log of ${NAMES[k]}`); continue; }
    const res = await sess.run("build100k", k, "build100k", [k], 300_000);
    if (res && !res.error) built.push(k);
  }
  for (let r = 0; r < RUNS_PREFIX && inTime(); r++) {
    if (!wantRun(r)) { skip(`case 5 (100k) runs ${r + 1}..${RUNS_PREFIX}`); break; }
    for (const k of rotate(built, r)) await sess.run("prefix100k", k, "prefixQuery", [k, "100k"], 30_000);
  }
  await sess.close(); // every connection of the building page is closed

  // Case 6: each run in a fresh page of the same browser.
  const COLD = [11, 111, 211, 311, 411];
  for (let r = 0; r < Math.min(RUNS, COLD.length) && inTime(); r++) {
    if (!wantRun(r)) { skip(`case 6 runs ${r + 1}..`); break; }
    for (const k of rotate(built, r)) {
      const page = await newBenchPage();
      const s = Object.assign(new Session([k]), { page, ready: [k], keys: [k] }); // nothing imported yet
      await s.run("cold", k, "coldStart", [k, COLD[r]], 60_000);
      await s.close();
    }
  }

  // Cases 8 then 7, in a fresh page per implementation.
  const FORGET = [123, 456, 789];
  for (const k of built) {
    if (!inTime()) { skip(`cases 7 and 8 of ${NAMES[k]}`); continue; }
    const s = await new Session([k]).start();
    for (let r = 0; r < RUNS_100K && inTime(); r++) {
      if (!wantRun(r, 1)) { skip(`case 8 runs ${r + 1}..`); break; }
      await s.run("stream", k, "streamAll", [k], 180_000);
    }
    for (let r = 0; r < Math.min(RUNS_100K, FORGET.length) && inTime(); r++) {
      await s.run("forget", k, "forget", [k, FORGET[r]], 60_000);
    }
    // Leave the profile small: the temporary profile is removed anyway.
    await call(s.page, "cleanup", [k], 60_000);
    await s.close();
  }

  // The 100k log in the other push shapes (eventstore-wasm only), with the time until folded.
  if (keys.includes("eventstore")) {
    const s = await new Session(["eventstore"]).start();
    // Issue 9 asks for these figures in every run: not subject to the time budget.
    for (const [aggs, per] of SHAPES_100K) {
      await s.run(`build100k${aggs}x${per}`, "eventstore", "build100kShape", ["eventstore", aggs, per], 300_000);
    }
    await s.close();
  }
}

// ---- report ---------------------------------------------------------------------------------

/** Push shapes of case 1s: [aggregates per push, events per aggregate]. */
const SHAPES = [[100, 1], [10, 10], [25, 4]];
/** The 100k log is built in shape 25 × 4 for every implementation; these for eventstore-wasm alone. */
const SHAPES_100K = [[100, 1], [10, 10]];
const TARGETS = {
  append: [["dexie", 0.25], ["raw", 0.5]],
  single: [["raw", 1.2]],
  loads: [["dexie", 0.5]],
  added: [["dexie", 0.5]],
};

function report() {
  const E = "eventstore";
  const rows = [];
  const cell = (c, k) => {
    if (loadErrors[k] && !results[c]?.[k]) return "not run";
    const s = results[c]?.[k];
    if (!s) return "–";
    if (!s.runs.length) return s.errors.length ? "error" : "–";
    return `${fmtMs(median(s.runs))}${s.fails.length || s.errors.length ? " †" : ""}`;
  };
  const ratio = (c, peer) => {
    const a = med(c, E), b = med(c, peer);
    return a != null && b ? a / b : null;
  };
  const timed = (id, label, c, targets = [], absolute = null) => {
    const rs = Object.fromEntries(["dexie", "raw"].map((p) => [p, ratio(c, p)]));
    const goals = [];
    let met = true, known = true;
    for (const [peer, max] of targets) {
      goals.push(`≤ ${max}x ${NAMES[peer]}`);
      if (rs[peer] == null) known = false;
      else if (rs[peer] > max) met = false;
    }
    if (absolute != null) {
      goals.push(`< ${absolute} ms`);
      const m = med(c, E);
      if (m == null) known = false;
      else if (!(m < absolute)) met = false;
    }
    const checks = ok(c, E);
    const verdict = !goals.length ? "" : !known ? "n/a" : !checks ? (met ? "yes, but read-back failed" : "no; read-back failed") : met ? "yes" : "**no**";
    rows.push([id, label, cell(c, E), cell(c, "dexie"), cell(c, "raw"), fmtX(rs.dexie), fmtX(rs.raw), goals.join(", "), verdict]);
  };

  timed("1", "append 10,000 events, 100 per push", "append", TARGETS.append);
  {
    const floor = med("floor", "raw");
    rows.push(["1f", "floor: raw IndexedDB, 1 record per push of 100 events, no index", "", "", floor == null ? "–" : `${floor.toFixed(0)} ms`, "", "", "", ""]);
    for (const [aggs, per] of SHAPES) {
      const c = `shape${aggs}x${per}`;
      const e = med(c, E), d = med(c, "dexie");
      const vsD = e != null && d ? e / d : null;
      const vsF = e != null && floor ? e / floor : null;
      const met = vsD == null || vsF == null ? "n/a" : !ok(c, E) ? "read-back failed" : vsD <= 0.25 && vsF <= 3 ? "yes" : "**no**";
      rows.push([`1s`, `append 10,000 events, pushes of ${aggs} aggregates × ${per}`, cell(c, E), cell(c, "dexie"), cell(c, "raw"), fmtX(vsD), fmtX(vsF) + " of floor", "≤ 0.25x Dexie, ≤ 3x floor", met]);
      const x = (k, f) => median((results[c]?.[k]?.extra ?? []).map((r) => r[f]).filter((v) => typeof v === "number"));
      const fmt = (v) => (v == null ? "–" : `${v.toFixed(1)} ms`);
      const ln = x(E, "loadsNow"), lf = x(E, "loadsFolded"), ld = x("dexie", "loadsNow");
      for (const [what, now, folded] of [["200 aggregate loads", "loadsNow", "loadsFolded"], ["`user.*.added`", "addedNow", "addedFolded"]]) {
        const vn = x(E, now), vf = x(E, folded), vd = x("dexie", now), vr = x("raw", now);
        rows.push([`1s`, `… ${what} right after / after folding (${aggs} × ${per})`, `${fmt(vn)} / ${fmt(vf)}`, fmt(vd), fmt(vr),
          vd && vn != null && vf != null ? `${fmtX(vn / vd)} / ${fmtX(vf / vd)}` : "–",
          vr && vn != null && vf != null ? `${fmtX(vn / vr)} / ${fmtX(vf / vr)}` : "–",
          "≤ 0.5x Dexie", vd && vn != null && vf != null ? (Math.max(vn, vf) / vd <= 0.5 ? "yes" : "**no**") : "n/a"]);
      }
      rows.push([`1s`, `… time from the last push until folding caught up (${aggs} × ${per})`, fmt(x(E, "foldMs")), "", "", "", "", "", ""]);
    }
  }
  timed("2", "500 pushes of one event (1 transaction each)", "single", TARGETS.single);
  timed("3", "200 aggregate loads (full history)", "loads", TARGETS.loads);
  timed("4", "filter `user.*.added`, 10,000-event log", "added", TARGETS.added);
  timed("5a", "`user.u7.>` on the 10,000-event log", "prefix10k");
  timed("5b", "`user.u7.>` on the 100,000-event log", "prefix100k");
  {
    const sc = (k) => { const a = med("prefix10k", k), b = med("prefix100k", k); return a && b != null ? b / a : null; };
    const v = sc(E);
    const checks = ok("prefix10k", E) && ok("prefix100k", E);
    rows.push(["5", "scaling: time on 100k / time on 10k", fmtX(v), fmtX(sc("dexie")), fmtX(sc("raw")), "", "", "≤ 2x", v == null ? "n/a" : !checks ? "read-back failed" : v <= 2 ? "yes" : "**no**"]);
  }
  timed("6", "cold start: fresh page, open 100k db, load 1 aggregate", "cold", [], 150);
  timed("7", "forget one aggregate (100 events) in the 100k log", "forget", [], 50);
  timed("8", "stream all 100,000 events through a reducer", "stream");
  {
    const x = (results.stream?.[E]?.extra ?? []).filter((r) => !r.error);
    const before = x.length ? x[0].memoryBefore : null;
    const after = x.length ? Math.max(...x.map((r) => r.memoryAfter ?? 0)) : null;
    const limit = 32 * 1048576;
    rows.push(["8m", "wasm memory: before → after streaming", x.length ? `${fmtMiB(before)} → ${fmtMiB(after)}` : "–", "n/a", "n/a", "", "", "< 32 MiB",
      after == null ? "n/a" : after < limit ? (ok("stream", E) ? "yes" : "yes, but read-back failed") : "**no**"]);
  }
  {
    const z = info.size;
    // The issue's "120 KB", in decimal kilobytes: the stricter reading.
    rows.push(["9", "gzip -9 of .wasm + JS glue and snippets", z ? `${fmtKiB(z.gzip)} (${(z.gzip / 1000).toFixed(1)} kB)` : "–", "", "", "", "", "≤ 120 kB (117.2 KiB)", z ? (z.gzip <= 120_000 ? "yes" : "**no**") : "n/a"]);
  }
  timed("–", "building the 100k log (1,000 pushes of 100; not a case)", "build100k");
  {
    const x = (c, f) => median((results[c]?.eventstore?.extra ?? []).map((r) => r[f]).filter((v) => typeof v === "number"));
    const fmt = (v) => (v == null ? "–" : fmtMs(v));
    rows.push(["–", "… then until folding caught up (25 × 4)", fmt(x("build100k", "foldMs")), "", "", "", "", "", ""]);
    for (const [aggs, per] of SHAPES_100K) {
      const c = `build100k${aggs}x${per}`;
      rows.push(["–", `writing a 100,000-event log in pushes of ${aggs} × ${per}; then until folding caught up`, `${fmt(med(c, E))}; ${fmt(x(c, "foldMs"))}`, "", "", "", "", "", ""]);
    }
  }

  const head = ["#", "case", NAMES.eventstore, NAMES.dexie, NAMES.raw, "vs Dexie", "vs raw", "target", "met"];
  let md = [`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
  // Encryption at rest (issue 11): cases 1, 3 and 4 with { encryption: true }.
  if (requested.includes(ENC)) {
    const enc = [["1", "append 10,000 events, 100 per push", "append"], ["3", "200 aggregate loads (full history)", "loads"], ["4", "filter `user.*.added`, 10,000-event log", "added"]].map(([id, label, c]) => {
      const a = med(c, E), b = med(c, ENC);
      const r = a && b != null ? b / a : null;
      const checks = ok(c, ENC);
      return [id, label, cell(c, E), cell(c, ENC), fmtX(r), "≤ 1.5x", r == null ? "n/a" : !checks ? "read-back failed" : r <= 1.5 ? "yes" : "**no**"];
    });
    const h = ["#", "case", NAMES.eventstore, NAMES[ENC], "encrypted / unencrypted", "target", "met"];
    md += `\n\nEncryption at rest (\`{ encryption: true }\`, docs/privacy.md):\n\n${[`| ${h.join(" | ")} |`, `| ${h.map(() => "---").join(" | ")} |`, ...enc.map((r) => `| ${r.join(" | ")} |`)].join("\n")}`;
  }
  return { md, rows };
}

function detailRuns() {
  const lines = [];
  const labels = {
    append: "1 append", single: "2 single pushes", loads: "3 aggregate loads", added: "4 filter added",
    prefix10k: "5a u7 on 10k", prefix100k: "5b u7 on 100k", cold: "6 cold start", forget: "7 forget",
    stream: "8 stream", build100k: "build 100k",
  };
  for (const [c, label] of Object.entries(labels)) {
    for (const k of ALL) {
      const s = results[c]?.[k];
      if (!s) continue;
      lines.push(`- ${label}, ${NAMES[k]}: ${s.runs.map((m) => m.toFixed(1)).join(", ") || "no run"} ms${s.errors.length ? ` (${s.errors.length} errors)` : ""}`);
    }
  }
  return lines.join("\n");
}

function coldBreakdown() {
  const lines = [];
  for (const k of ALL) {
    if (!results.cold?.[k]) continue;
    lines.push(`- ${NAMES[k]}: import ${fmtMs(medOf("cold", k, "importMs"))}, init ${fmtMs(medOf("cold", k, "initMs"))}, open ${fmtMs(medOf("cold", k, "openMs"))}, load ${fmtMs(medOf("cold", k, "loadMs"))} (medians)`);
  }
  return lines.join("\n");
}

function memoryDetail() {
  const x = (results.stream?.eventstore?.extra ?? []).filter((r) => !r.error);
  if (!x.length) return "- not measured";
  const b = results.build100k?.eventstore?.extra?.find((r) => !r.error);
  const lines = x.map((r, i) => `- run ${i + 1}: after init ${fmtMiB(r.memoryInit)}, after open ${fmtMiB(r.memoryBefore)}, after streaming ${fmtMiB(r.memoryAfter)} (${r.memoryAfter} bytes)`);
  if (b && typeof b.memory === "number") lines.push(`- for comparison, the page that built the 100k log (1,000 pushes) ended at ${fmtMiB(b.memory)}`);
  return lines.join("\n");
}

function checksSection() {
  const lines = [];
  for (const k of ALL) {
    if (!requested.includes(k)) continue;
    if (loadErrors[k]) { lines.push(`- **${NAMES[k]}: not run**: ${loadErrors[k]}`); continue; }
    const bad = Object.entries(results).filter(([, v]) => v[k] && (v[k].fails.length || v[k].errors.length));
    if (!bad.length) { lines.push(`- ${NAMES[k]}: every read-back check passed.`); continue; }
    lines.push(`- **${NAMES[k]}: failures**`);
    for (const [c, v] of bad) {
      for (const e of v[k].errors) lines.push(`  - ${c}: error: ${e}`);
      for (const f of v[k].fails) lines.push(`  - ${c}: ${f}`);
    }
  }
  return lines.join("\n");
}

async function writeReport(table) {
  const date = new Date().toISOString().slice(0, 10);
  const cpu = cpus();
  const z = info.size;
  const dexieVersion = JSON.parse(await readFile(join(ROOT, "node_modules/dexie/package.json"), "utf8")).version;
  const pwVersion = JSON.parse(await readFile(join(ROOT, "node_modules/playwright-core/package.json"), "utf8")).version;
  const text = `# Benchmarks

Generated by \`npm run bench\` (\`node bench/run.mjs\`) on ${date}; do not edit by hand.

- Browser: Chromium ${info.browser ?? "?"} (Debian's \`/usr/bin/chromium\`, headless, driven by playwright-core ${pwVersion}),
  one browser session for all three implementations, on a fresh temporary profile on disk
  (Firefox ESR and WebKitGTK: see [Firefox and WebKit](#firefox-and-webkit))
- Machine: ${cpu.length} × ${cpu[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${osType()} ${osRelease()}, Node ${process.version};
  load average (1 min) ${info.loadStart[0].toFixed(1)} at the start, ${info.loadEnd[0].toFixed(1)} at the end of the run
  (above 2 means other processes competed for the 2 cores: read the ratios, not the absolute times)
- Peers: Dexie ${dexieVersion} (\`dist/dexie.mjs\`) and hand-written IndexedDB
- Figures are medians of ${RUNS} runs (${RUNS_PREFIX} for case 5, ${RUNS_100K} for the streaming and forget cases on the 100k log,
  ${Math.min(RUNS, 5)} fresh pages for the cold start); † marks a figure whose read-back checks failed.
  Ratios are eventstore-wasm's median divided by the peer's median in the same run.${skipped.length ? `\n- Skipped for the time budget: ${skipped.join("; ")}` : ""}

${table}

## What is met, and what limits the rest

The table's last column says which targets this run met; figures move by ±20–50 % between runs
on this machine, so a ratio near its target can land on either side. What sets each figure, from
how eventstore-wasm stores events (\`docs/storage.md\`):

- **Case 1, append (≤ 0.25x Dexie, ≤ 0.5x raw).** eventstore-wasm writes each push as one
  *unfolded* record holding all its aggregates' batches as one JSON text (three index entries:
  \`start\`, \`createdAt\`, \`unfolded\`), and once it knows the log, reads nothing before
  writing; a background step folds those records into one record per aggregate and push once the
  page is quiet. The peers write 100 records with about 5 index entries each. What remains is
  IndexedDB's cost of one record and one transaction per push (the floor, row 1f) and the
  library's own work (checking the input, encoding JSON): about 1.5–2x the floor. The input is
  read as one JSON text per push when it has the usual shape (one \`JSON.stringify\` of the whole
  argument, one parse in wasm), not field by field across the wasm boundary: 3–15 % off the
  append in A/B runs in one page against the build before (2026-11-27).
- **Case 1s, push shapes (≤ 0.25x Dexie, ≤ 3x the floor).** One record per push whatever the
  shape, so 100 aggregates × 1 event cost what 25 × 4 cost; the peers pay per event and index
  entry. The fold pays the per-record cost later (one record per aggregate and push: 10,000 for
  100 × 1, 1,000 for 10 × 10, 2,500 for 25 × 4), in transactions of about 128 batches that wait
  for pushes and reads to pause; "time until folding caught up" is measured from the last push.
  Reads right after the appends find the store's own pushes in memory (decoded once per
  connection) and read IndexedDB only outside them, which makes \`user.*.added\` there several
  times faster than on the folded log; after folding, reads cost what the per-aggregate records
  cost: an aggregate load of 100 × 1 reads 10 records of one event each, as the peers read 10
  records, hence about Dexie's time; \`user.*.added\` on 100 × 1 reads 10,000 one-event records,
  and Chromium's \`getAll\` of them is most of its time (CPU profile: wasm decoding is a few
  percent), hence slower than Dexie there. Folded, the 100 × 1 log is the layout the store wrote
  for such pushes before unfolded records existed (one record per aggregate and push), and
  reads cost what they cost there. Timed in one page against a build of the store from before
  the change (schema 4), alternating, 10 rounds each: on the folded 100 × 1 log, \`user.*.added\`
  0.83x, 200 loads 0.95x, the whole log 0.93x its time; on 25 × 4, loads and \`user.*.added\`
  1.00x (2026-11-27, since long reads request their next page ahead; before that they were 5–10 %
  slower). A 100,000-event log in pushes of 100 × 1 leaves 100,000 batch records to fold, which
  takes several seconds after the pushes.
- **Case 2, one event per push (≤ 1.2x raw).** A store that knows the log's end and the
  aggregate's head writes at once: the push's first record carries its first position under a
  unique index, so a write based on a stale guess fails and is redone after reading. It does less
  IndexedDB work than hand-written code that reads the head first.
- **Case 3, aggregate loads (≤ 0.5x Dexie).** A load is one \`getAll\` on the \`aggregate\`
  index; loads in a row share a read transaction, and batches read whole are expanded into events
  in JavaScript without crossing into wasm. That puts eventstore-wasm at about raw IndexedDB's
  speed, and raw IndexedDB itself takes 0.5–0.9x Dexie's time in these runs: the time is
  Chromium's request round trip. Halving Dexie would need answering without asking IndexedDB,
  i.e. from memory, which a store shared with other tabs cannot trust without a round trip.
  Cases 3 and 4 read the log case 1 wrote once it has been folded (case 1 waits for that,
  untimed), in a new connection each run; each read transaction also lists the \`unfolded\`
  index, pipelined with its first lookup, to merge records pushed but not folded yet.
- **Case 4, \`user.*.added\` (≤ 0.5x Dexie).** Every batch holds all four lifecycle events of an
  aggregate's push entry, so finding the \`added\` ones reads every batch: \`getAll\` of those
  2,500 records alone takes about 65 ms here, around 0.4x Dexie's whole query; decoding 10,000
  events in wasm to keep 2,500 brings it to 0.6–0.7x. Long reads request their next page before
  decoding the one they have (docs/storage.md), which overlaps some of the two: case 8's stream
  of 100,000 events and \`user.*.added\` on 10,000 one-event records took about a fifth less.
- **Case 5, scaling (≤ 2x).** \`user.u7.>\` reads only user.u7's batches (its events start with
  the aggregate, so the \`aggregate\` index finds them): 3 records in the 10k log, 25 in the 100k
  log. Its cost follows the matching records, not the log; 2x would need the per-query fixed cost
  to dominate 25 records, which no implementation here reaches.
- Case 5 lands on either side of 2x between runs (1.8x and 2.7x on 2026-11-27): about 0.7 ms
  against 2 ms, where one round trip more or less moves the ratio by half.
- Cases 6–8 meet their targets.
- **Case 9, size (≤ 120 kB).** Not met since the sync client joined the module (its protocol
  types and rules are the core's, compiled in) and the write path's unfolded records; encryption
  at rest added RustCrypto's AES-GCM (about 40 KB), then SHA-256 (2.8 KB), the reserved key
  slots' code (about 9 KB) and ChaCha20-Poly1305 (3.5 KB; AES-GCM stays, for stores of encryption
  format 1). The figure
  also depends on the build machine: on 2026-11-27 a build of the commit of the previous
  \`BENCHMARKS.md\` (which recorded 348 KiB of wasm) came out at 526 KiB with the same Rust
  1.95.0, wasm-bindgen 0.2.130 and binaryen 132; the cause was not found.
- **Encryption at rest (≤ 1.5x the unencrypted time).** New stores seal with ChaCha20-Poly1305
  (encryption format 2, docs/privacy.md): about 0.8 µs per 200-byte payload in wasm, against
  4.8 µs for the AES-256-GCM of format 1 (RustCrypto's constant-time software AES and GHASH,
  on 32-bit words in wasm), which had kept appends and \`user.*.added\` at 1.5–1.7x the
  unencrypted time. What is left: the cipher (some 10 ms of the 10,000-event append),
  ciphertext stored as base64 (records a third bigger to write, read and copy into wasm), on
  appends one more request per transaction (the shred fence), and on reads the opening of
  sealed records in wasm before their events are built. A push that meets aggregates new to the
  key vault does not wait for the vault (reserved key slots, docs/privacy.md); the vault's
  worker binds those slots meanwhile, one write per run of slots and a flush per bind. Timed in
  one page against binds answered at once without the worker, those binds cost the append about
  80 ms while the worker wrote each slot twice and rebuilt its map of live slots per bind, about
  15 ms since (2026-11-27). Both stores share the input path: since \`push\` reads its argument
  as one JSON text, the unencrypted append got faster by about as much as the encrypted one,
  which moves this ratio up, not down.

## Firefox and WebKit

The same page, cases, checks and implementations, driven through W3C WebDriver
(\`bench/engines.mjs\`, \`tests/webdriver/client.mjs\`) right after the Chromium run, on the same
machine; each engine gets a fresh profile on disk. Ratios compare implementations within one
engine; the targets above are Chromium's and are not applied here. Both engines keep IndexedDB
in SQLite, where Chromium uses LevelDB, so the costs of records, index entries and transactions
differ. Firefox's \`performance.now()\` runs at full precision here
(\`privacy.reduceTimerPrecision\` off); WebKit's counts whole milliseconds, so the few-ms queries
(case 5) read as whole numbers there. Case 8's wasm memory is measured in Chromium only.

${engineTables(engineData)}
${syncMd}
## Workload

- 1,000 aggregates \`user.u0\` … \`user.u999\`; actions \`user.uN.added\`, \`user.uN.renamed\`,
  \`user.uN.email.changed\`, \`user.uN.removed\`; each payload is a JSON object of 200 bytes
  (\`JSON.stringify\` length; names, e-mail addresses, pseudo-random text).
- A push holds 100 events: 25 different aggregates with 4 events each, in the lifecycle order
  (added, renamed, email.changed, removed). The 25 aggregates of a push are spread over the key
  space (group g goes to aggregate g·397 mod 1000), so a push never writes 25 neighbours; each
  aggregate comes back every 40 pushes and its sequences continue across pushes. The 10,000-event
  log therefore holds 8 or 12 events per aggregate, the 100,000-event log 100 per aggregate.
- eventstore-wasm receives a push as one \`push()\` call with one entry per aggregate (25 entries of
  4 commands); Dexie and raw IndexedDB receive the same 100 events as one bulk readwrite
  transaction.
- Case 2 pushes the first 500 events of that workload one by one, each in its own call /
  transaction, on a fresh database.
- Case 3 loads 200 different aggregates one after the other (run r loads \`user.u(r+5i)\`,
  i = 0…199), the full history of each.
- Case 5 queries \`user.u7.>\` (every event of aggregate user.u7: 12 events in the 10k log, 100 in
  the 100k log).
- Cases 5b–8 use a 100,000-event log (1,000 pushes of the same workload) built once per
  implementation; its build time is shown but is not a case.
- Case 6 opens a new page of the same browser after the building page has closed; it times importing
  the implementation's module (for eventstore-wasm also fetching, compiling and instantiating the
  wasm), opening the database and loading one aggregate (100 events). Each run loads a different
  aggregate.
- Case 7 forgets a different aggregate (100 events) in each run; case 8 passes all 100,000 events
  to a reducer and reads \`memory.buffer.byteLength\` of the wasm module before and after.
- Case 9 is \`gzip -9\` (node:zlib) of ${z ? Object.entries(z.files).map(([f, v]) => `\`${f}\` (${fmtKiB(v.raw)} → ${fmtKiB(v.gzip)})`).join(" plus ") : "`pkg/eventstore_wasm_bg.wasm` plus `pkg/eventstore_wasm.js` (not built: " + info.sizeError + ")"}.

## How the peers are used (their best practice)

- Schema: one record per event \`{ position (auto-increment key), id, aggregate, action, prefixes,
  revision, sequence, createdAt, payload, forgotten }\`, a unique compound index
  \`[aggregate+sequence]\` and a multiEntry index \`prefixes\` on the action's subject prefixes
  (\`user\`, \`user.u7\`, \`user.u7.email\`, \`user.u7.email.changed\`). Dexie:
  \`++position, &[aggregate+sequence], *prefixes\`.
- Writes do the same job as \`push\`: in one readwrite transaction per batch, read each aggregate's
  last sequence (a reverse key cursor on the compound index), assign the following sequences, then
  write the batch (Dexie \`bulkAdd\`; raw \`add\` and an explicit \`commit()\`). Default durability
  (relaxed in Chromium) for everybody.
- Reads use \`getAll\` (Dexie \`toArray\`): an aggregate load is a range of the compound index;
  \`user.*.added\` and \`user.u7.>\` read the \`prefixes\` index (\`user\`, \`user.u7\`) and filter in JS;
  streaming reads pages of 1,000 records by primary key.
- Forget overwrites \`payload\` with \`null\` (and sets \`forgotten\`) for the aggregate's records in
  one readwrite transaction (Dexie \`modify\`; raw \`getAll\` + \`put\`).
- What eventstore-wasm does by itself, for any app: reads issued one after another share a read
  transaction (for up to 25 ms), and a page that pushes alone writes without reading first. The
  peers use one transaction per load and read each head before writing, as an app written by
  hand against them would (an app could wrap its loads in one Dexie transaction if it knew them
  in advance; loads that follow incoming commands are not known in advance).

## Honesty rules

- Every implementation reads back and checks what it wrote, untimed: event counts, sequences
  1..n in position order, and one known event's aggregate, action, sequence and payload (compared
  key-order-independently); forget is checked by reading the aggregate back (payload \`null\`,
  metadata kept) and a neighbour aggregate (payload intact).
- Each timed call opens its database first (untimed) and closes it after, so nothing read in one
  timed phase is kept for the next one; inputs are generated before the timer starts.
- Runs of the different implementations are interleaved, in a rotating order; the encrypted
  store runs next to the unencrypted one, after it in even rounds and before it in odd ones
  (a run right after a peer's append of 10,000 indexed records was 15–20 % slower than one right
  after eventstore-wasm's, in one page on 2026-11-27; likely the backend compacting the peer's
  records meanwhile, not measured; the encrypted store used to follow raw IndexedDB or Dexie in every round).

## Details

Every run (ms):

${detailRuns()}

${engineDetails(engineData)}

Cold start breakdown:

${coldBreakdown()}

wasm memory (case 8):

${memoryDetail()}

## Read-back checks

${checksSection()}

## Caveats

- One 2-core machine, a shared disk: expect ±20–50 % between sessions; compare ratios within a run.
- The cold start is a fresh page, not a fresh browser: the browser process (and the OS page cache)
  has already seen the database files.
- Case 5: \`user.u7.>\` matches 12 events in the 10k log and 100 in the 100k log, so a cost
  proportional to the matching events alone gives about 8x; the ≤ 2x target asks for the fixed cost
  of a query to dominate. The queries take a few ms, near the 0.1 ms resolution of
  \`performance.now()\` in a page that is not cross-origin isolated.
- IndexedDB in Chromium is LevelDB; write costs are per record and per index entry much more than
  per byte (the team's MEASUREMENTS.md, and docs/storage.md).
`;
  await writeFile(join(ROOT, "BENCHMARKS.md"), text);
  log("wrote BENCHMARKS.md");
}

let exitCode = 0;
try {
  await main();
} catch (e) {
  log(`harness failure: ${e.stack ?? e}`);
  exitCode = 2;
} finally {
  await context?.close().catch(() => {});
  await closeServer?.().catch(() => {});
  if (profileDir) await rm(profileDir, { recursive: true, force: true }).catch(() => {});
}
info.chromiumSeconds = Math.round(elapsed() / 1000);

// Firefox ESR and WebKitGTK, after Chromium's browser has closed.
let engineData = {};
if (ENGINES.length) {
  try {
    engineData = await runEngines({ engines: ENGINES, log });
  } catch (e) {
    log(`other engines: harness failure: ${e.stack ?? e}`);
    exitCode ||= 2;
  }
}

// The sync cases (bench/sync.mjs): their own server, browser and PostgreSQL cluster.
let syncResults = null;
if (!argv.includes("--no-sync")) {
  try {
    syncResults = await runSyncBench({ log });
  } catch (e) {
    log(`sync: harness failure: ${e.stack ?? e}`);
    exitCode ||= 2;
  }
}
const syncMd = syncResults ? syncSection(syncResults) : "";

info.loadEnd = loadavg();
const { md } = report();
console.log(`\nChromium ${info.browser ?? "?"}, ${new Date().toISOString().slice(0, 10)}; load average ${info.loadStart[0].toFixed(1)} → ${info.loadEnd[0].toFixed(1)}; medians, ratios = eventstore-wasm / peer\n`);
console.log(md);
const checks = checksSection();
console.log(`\nRead-back checks:\n${checks}`);
if (info.size) console.log(`\nSize: ${Object.entries(info.size.files).map(([f, v]) => `${f} ${v.raw} B → ${v.gzip} B gzip`).join("; ")}; total ${info.size.gzip} B gzip`);
else console.log(`\nSize: not measured (${info.sizeError})`);
console.log(`\nCold start breakdown:\n${coldBreakdown()}\n\nwasm memory:\n${memoryDetail()}`);
if (ENGINES.length) console.log(`\n${engineTables(engineData)}`);
if (syncMd) console.log(`\n${syncMd}`);

await mkdir(join(ROOT, "bench/results"), { recursive: true });
await writeFile(join(ROOT, "bench/results", `${new Date().toISOString().replace(/[:.]/g, "-")}.json`),
  JSON.stringify({ info, requested, loadErrors, skipped, results, engines: engineData, sync: syncResults }, null, 1));
if (WRITE) await writeReport(md);
else log("BENCHMARKS.md not rewritten (subset of implementations or --no-write)");

const anyFailure = Object.values(results).some((v) => Object.values(v).some((s) => s.fails.length || s.errors.length))
  || requested.some((k) => loadErrors[k]) || engineFailures(engineData) || (syncResults && syncFailed(syncResults));
log(`done in ${(elapsed() / 1000).toFixed(0)} s`);
process.exit(exitCode || (anyFailure ? 1 : 0));
