// The benchmark's main cases in Firefox ESR and WebKitGTK, through plain W3C
// WebDriver (tests/webdriver/client.mjs): the same page (bench/page.html), the
// same cases (bench/cases.js) and the same three implementations as the
// Chromium run of bench/run.mjs, with ratios taken within each engine.
//
//   node bench/engines.mjs [--engines=firefox,webkit] [--runs=N]   prints the tables only
//
// bench/run.mjs calls runEngines() after the Chromium run and writes
// engineSection()'s text into BENCHMARKS.md.
import { fileURLToPath } from "node:url";
import { launch, debianVersion } from "../tests/webdriver/client.mjs";
import { serve } from "../scripts/serve.mjs";

export const OTHER_ENGINES = ["firefox", "webkit"];
const IMPLS = ["eventstore", "dexie", "raw"];
const NAMES = { eventstore: "eventstore-wasm", dexie: "Dexie", raw: "raw IndexedDB" };

/** The cases of the table: [results key, row id, label]. */
export const ENGINE_CASES = [
  ["append", "1", "append 10,000 events, 100 per push"],
  ["single", "2", "500 pushes of one event (1 transaction each)"],
  ["loads", "3", "200 aggregate loads (full history)"],
  ["added", "4", "filter `user.*.added`, 10,000-event log"],
  ["prefix10k", "5a", "`user.u7.>` on the 10,000-event log"],
  ["prefix100k", "5b", "`user.u7.>` on the 100,000-event log"],
  ["cold", "6", "cold start: fresh page, open 100k db, load 1 aggregate"],
  ["forget", "7", "forget one aggregate (100 events) in the 100k log"],
  ["stream", "8", "stream all 100,000 events through a reducer"],
  ["build100k", "–", "building the 100k log (1,000 pushes of 100; not a case)"],
];

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmtMs = (ms) => (typeof ms !== "number" || !Number.isFinite(ms) ? "–" : ms >= 100 ? `${Math.round(ms).toLocaleString("en-US")} ms` : `${ms.toFixed(1)} ms`);
const fmtX = (x) => (typeof x === "number" && Number.isFinite(x) ? `${x.toFixed(2)}x` : "–");

/** What each engine is, for the report: browser, driver, and where IndexedDB lives. */
const ENGINE_INFO = {
  firefox: () => ({
    title: "Firefox ESR",
    browser: `Firefox ${debianVersion("firefox-esr") ?? "?"} (Debian's \`firefox-esr\`, headless, through geckodriver)`,
    storage: "a fresh temporary profile on disk (geckodriver's): IndexedDB is SQLite files",
  }),
  webkit: () => ({
    title: "WebKitGTK",
    browser: `WebKitGTK ${debianVersion("libwebkit2gtk-4.1-0") ?? "?"} (Debian's, through its Python bindings: \`scripts/bin/webkit-persistent-browser\`, driven by WebKitWebDriver from \`webkit2gtk-driver\`, on Xvfb)`,
    storage: "a fresh data directory on disk: IndexedDB is SQLite files, as in Safari (MiniBrowser, which WebKitWebDriver starts by default, would keep it in memory)",
  }),
};

/**
 * Runs ENGINE_CASES in each engine, `runs` times each, the implementations
 * interleaved in a rotating order, in the order and with the checks of
 * bench/run.mjs. Past `budgetMs` for an engine, runs after a case's first are
 * skipped; past 1.6 times that, the remaining cases are.
 */
export async function runEngines({ engines = OTHER_ENGINES, runs = 3, budgetMs = 150_000, log = console.log } = {}) {
  const out = {};
  const { url, close } = await serve();
  try {
    for (const engine of engines) out[engine] = await runEngine(engine, url, runs, budgetMs, log);
  } finally {
    await close();
  }
  return out;
}

async function runEngine(engine, url, runs, budgetMs, log) {
  const start = Date.now();
  const soft = () => Date.now() - start < budgetMs; // optional runs (beyond the first)
  const hard = () => Date.now() - start < budgetMs * 1.6; // any further case
  const data = { engine, ...ENGINE_INFO[engine](), version: null, results: {}, loadErrors: {}, skipped: [], error: null, runs };
  let browser;
  try {
    // Full timer precision (Firefox rounds performance.now() to 1 ms by default).
    browser = await launch(engine, engine === "firefox" ? { firefoxPrefs: { "privacy.reduceTimerPrecision": false } } : {});
    data.version = browser.version;
    const page = `${url}/bench/page.html`;

    /** A fresh bench page in a new tab, replacing `old` (closed: its connections end). */
    const freshPage = async (old) => {
      const tab = old ? await browser.newTab(null) : await browser.open(null);
      if (old) await old.close();
      await tab.goto(page);
      const deadline = Date.now() + 30_000;
      while (!(await tab.run(() => window.benchReady === true))) {
        if (Date.now() > deadline) throw new Error("bench/page.html did not get ready within 30 s");
        await new Promise((ok) => setTimeout(ok, 100));
      }
      return tab;
    };
    const call = async (tab, fn, args, timeoutMs) => {
      try {
        return await tab.run((fn, args) => window.bench[fn](...args), [fn, args], timeoutMs);
      } catch (e) {
        return { error: `harness: ${fn}: ${String(e.message).split("\n")[0]}`, fails: [] };
      }
    };
    const loadAll = async (tab, keys) => {
      const ready = [];
      for (const k of keys) {
        const res = await call(tab, "load", [k], 60_000);
        if (res.error) data.loadErrors[k] ??= res.error;
        else ready.push(k);
      }
      return ready;
    };
    const record = (id, k, res) => {
      const s = ((data.results[id] ??= {})[k] ??= { runs: [], fails: [], errors: [], extra: [] });
      if (res.error) s.errors.push(res.error);
      else if (typeof res.ms === "number") s.runs.push(res.ms);
      s.extra.push(res);
      for (const f of res.fails ?? []) if (!s.fails.includes(f) && s.fails.length < 10) s.fails.push(f);
      log(`${engine.padEnd(8)} ${id.padEnd(10)} ${NAMES[k].padEnd(16)} ${res.error ? `ERROR ${res.error}` : fmtMs(res.ms)}${res.fails?.length ? `  (${res.fails.length} failed checks)` : ""}`);
      return res;
    };
    /** `count` rounds of `fn` over `keys`, rotating the order; rounds after the first need the soft budget. */
    const rounds = async (tab, id, keys, count, fn, args, timeoutMs) => {
      for (let r = 0; r < count; r++) {
        if (!hard() || (r > 0 && !soft())) { data.skipped.push(`${id}${keys.length === 1 ? ` (${NAMES[keys[0]]})` : ""} runs ${r + 1}..${count}`); break; }
        for (let i = 0; i < keys.length; i++) {
          const k = keys[(i + r) % keys.length];
          record(id, k, await call(tab, fn, [k, ...args(r)], timeoutMs));
        }
      }
    };

    let tab = await freshPage(null);
    const keys = await loadAll(tab, IMPLS);
    log(`${engine} ${data.version}: implementations ${keys.map((k) => NAMES[k]).join(", ") || "none"}`);
    await rounds(tab, "append", keys, runs, "appendLog", () => [], 240_000);
    await rounds(tab, "single", keys, runs, "singlePushes", () => [], 180_000);
    await rounds(tab, "loads", keys, runs, "aggregateLoads", (r) => [r], 120_000);
    await rounds(tab, "added", keys, runs, "filterAdded", () => [], 120_000);
    await rounds(tab, "prefix10k", keys, Math.max(runs, 7), "prefixQuery", () => ["10k"], 60_000);

    const built = [];
    for (const k of keys) {
      if (!hard()) { data.skipped.push(`building the 100k log of ${NAMES[k]}`); continue; }
      const res = record("build100k", k, await call(tab, "build100k", [k], 600_000));
      if (!res.error) built.push(k);
    }
    await rounds(tab, "prefix100k", built, Math.max(runs, 7), "prefixQuery", () => ["100k"], 60_000);

    // Case 6: each run in a fresh page (the previous one closed first).
    const COLD = [11, 111, 211, 311, 411];
    for (let r = 0; r < Math.min(runs, COLD.length); r++) {
      if (!hard() || (r > 0 && !soft())) { data.skipped.push(`cold runs ${r + 1}..`); break; }
      for (let i = 0; i < built.length; i++) {
        const k = built[(i + r) % built.length];
        tab = await freshPage(tab);
        record("cold", k, await call(tab, "coldStart", [k, COLD[r]], 60_000));
      }
    }
    // Cases 8 then 7, in a fresh page per implementation; then the databases go.
    const FORGET = [123, 456, 789];
    for (const k of built) {
      tab = await freshPage(tab);
      if (!(await loadAll(tab, [k])).length) continue;
      await rounds(tab, "stream", [k], Math.min(runs, 3), "streamAll", () => [], 300_000);
      await rounds(tab, "forget", [k], Math.min(runs, 3), "forget", (r) => [FORGET[r]], 60_000);
      await call(tab, "cleanup", [k], 120_000);
    }
    tab = await freshPage(tab);
    for (const k of await loadAll(tab, keys.filter((k) => !built.includes(k)))) await call(tab, "cleanup", [k], 120_000);
  } catch (e) {
    data.error = String(e.message ?? e).split("\n")[0];
    log(`${engine}: ${data.error}`);
  } finally {
    await browser?.close();
  }
  data.seconds = Math.round((Date.now() - start) / 1000);
  return data;
}

/** True when any engine run failed, errored, or a read-back check failed. */
export function engineFailures(all) {
  return Object.values(all).some((d) => d.error || Object.keys(d.loadErrors).length
    || Object.values(d.results).some((c) => Object.values(c).some((s) => s.errors.length || s.fails.length)));
}

/** One markdown table per engine, with the Chromium table's columns (no targets). */
export function engineTables(all) {
  const parts = [];
  for (const d of Object.values(all)) {
    const med = (c, k) => median(d.results[c]?.[k]?.runs ?? []);
    const cell = (c, k) => {
      if (d.loadErrors[k]) return "not run";
      const s = d.results[c]?.[k];
      if (!s || !s.runs.length) return s?.errors.length ? "error" : "–";
      return `${fmtMs(median(s.runs))}${s.fails.length || s.errors.length ? " †" : ""}`;
    };
    const ratio = (c, p) => { const a = med(c, "eventstore"), b = med(c, p); return a != null && b ? a / b : null; };
    const head = ["#", "case", NAMES.eventstore, NAMES.dexie, NAMES.raw, "vs Dexie", "vs raw"];
    const rows = ENGINE_CASES.map(([c, id, label]) => [id, label, cell(c, "eventstore"), cell(c, "dexie"), cell(c, "raw"), fmtX(ratio(c, "dexie")), fmtX(ratio(c, "raw"))]);
    const scale = (k) => { const a = med("prefix10k", k), b = med("prefix100k", k); return a && b != null ? b / a : null; };
    rows.splice(6, 0, ["5", "scaling: time on 100k / time on 10k", fmtX(scale("eventstore")), fmtX(scale("dexie")), fmtX(scale("raw")), "", ""]);
    parts.push(`### ${d.title} ${d.version ?? ""}`.trim() + "\n");
    parts.push(`- Browser: ${d.browser}; ${d.storage}.`);
    parts.push(`- Medians of ${d.runs} runs (7 for case 5, 3 for cases 7 and 8)${d.skipped.length ? ` (skipped for the time budget: ${d.skipped.join("; ")})` : ""}; the engine's part of the run took ${d.seconds} s.`);
    if (d.error) parts.push(`- **The run stopped early**: ${d.error}`);
    for (const [k, e] of Object.entries(d.loadErrors)) parts.push(`- **${NAMES[k]} not run**: ${e}`);
    parts.push("");
    parts.push([`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n"));
    const cold = IMPLS.filter((k) => d.results.cold?.[k]).map((k) => {
      const x = d.results.cold[k].extra.filter((r) => !r.error);
      const m = (f) => fmtMs(median(x.filter((r) => typeof r[f] === "number").map((r) => r[f])));
      return `${NAMES[k]}: import ${m("importMs")}, init ${m("initMs")}, open ${m("openMs")}, load ${m("loadMs")}`;
    });
    if (cold.length) parts.push("", `Cold start breakdown (medians): ${cold.join("; ")}.`);
    const bad = [];
    for (const [c, v] of Object.entries(d.results)) {
      for (const [k, s] of Object.entries(v)) {
        for (const e of s.errors.slice(0, 3)) bad.push(`- ${c}, ${NAMES[k]}: error: ${e}`);
        for (const f of s.fails.slice(0, 3)) bad.push(`- ${c}, ${NAMES[k]}: ${f}`);
      }
    }
    parts.push("");
    parts.push(bad.length ? `Read-back checks and errors:\n\n${bad.join("\n")}` : "Every read-back check passed.");
    parts.push("");
  }
  return parts.join("\n");
}

/** Every run (ms) of every engine, for the Details section. */
export function engineDetails(all) {
  const lines = [];
  for (const d of Object.values(all)) {
    for (const [c, id] of ENGINE_CASES.map((x) => [x[0], x[1]])) {
      for (const k of IMPLS) {
        const s = d.results[c]?.[k];
        if (s) lines.push(`- ${d.title}, ${id} ${c}, ${NAMES[k]}: ${s.runs.map((m) => m.toFixed(1)).join(", ") || "no run"} ms${s.errors.length ? ` (${s.errors.length} errors)` : ""}`);
      }
    }
  }
  return lines.join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const engines = (arg("engines") ?? OTHER_ENGINES.join(",")).split(",").filter(Boolean);
  const all = await runEngines({ engines, runs: Number(arg("runs") ?? 3) });
  console.log(`\n${engineTables(all)}`);
  process.exit(engineFailures(all) ? 1 : 0);
}
