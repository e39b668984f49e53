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

/** The cases run in the other engines: [id, label, page function, args(run), timeout ms]. */
export const ENGINE_CASES = [
  ["append", "1", "append 10,000 events, 100 per push", "appendLog", () => [], 240_000],
  ["single", "2", "500 pushes of one event (1 transaction each)", "singlePushes", () => [], 180_000],
  ["loads", "3", "200 aggregate loads (full history)", "aggregateLoads", (r) => [r], 120_000],
  ["added", "4", "filter `user.*.added`, 10,000-event log", "filterAdded", () => [], 120_000],
  ["prefix10k", "5a", "`user.u7.>` on the 10,000-event log", "prefixQuery", () => ["10k"], 60_000],
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
    browser: `WebKitGTK ${debianVersion("libwebkit2gtk-4.1-0") ?? "?"} (Debian's \`webkit2gtk-driver\`: WebKitWebDriver and MiniBrowser under Xvfb)`,
    storage: "MiniBrowser's automation session, whose website data is ephemeral: IndexedDB is WebKit's in-memory backing store, not the SQLite files Safari writes",
  }),
};

/**
 * Runs ENGINE_CASES in each engine, `runs` times each, the implementations
 * interleaved in a rotating order. Each engine stops starting new runs
 * (after the first) once `budgetMs` has passed for it.
 */
export async function runEngines({ engines = OTHER_ENGINES, runs = 5, budgetMs = 150_000, log = console.log } = {}) {
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
  const data = { engine, ...ENGINE_INFO[engine](), version: null, userAgent: null, results: {}, loadErrors: {}, skipped: [], error: null, runs };
  let browser;
  try {
    // Full timer precision (Firefox rounds performance.now() to 1 ms by default).
    browser = await launch(engine, engine === "firefox" ? { firefoxPrefs: { "privacy.reduceTimerPrecision": false } } : {});
    data.version = browser.version;
    const tab = await browser.open(`${url}/bench/page.html`);
    const deadline = Date.now() + 30_000;
    while (!(await tab.run(() => window.benchReady === true))) {
      if (Date.now() > deadline) throw new Error("bench/page.html did not get ready within 30 s");
      await new Promise((ok) => setTimeout(ok, 100));
    }
    data.userAgent = await tab.run(() => navigator.userAgent);
    const call = async (fn, args, timeoutMs) => {
      try {
        return await tab.run((fn, args) => window.bench[fn](...args), [fn, args], timeoutMs);
      } catch (e) {
        return { error: `harness: ${fn}: ${String(e.message).split("\n")[0]}`, fails: [] };
      }
    };
    const ready = [];
    for (const k of IMPLS) {
      const res = await call("load", [k], 60_000);
      if (res.error) data.loadErrors[k] = res.error;
      else ready.push(k);
    }
    log(`${engine} ${data.version}: implementations ${ready.map((k) => NAMES[k]).join(", ") || "none"}`);
    for (const [id, , , fn, args, timeoutMs] of ENGINE_CASES) {
      for (let r = 0; r < runs; r++) {
        if (r > 0 && Date.now() - start > budgetMs) { data.skipped.push(`${id} runs ${r + 1}..${runs}`); break; }
        for (let i = 0; i < ready.length; i++) {
          const k = ready[(i + r) % ready.length];
          const res = await call(fn, [k, ...args(r)], timeoutMs);
          const s = ((data.results[id] ??= {})[k] ??= { runs: [], fails: [], errors: [] });
          if (res.error) s.errors.push(res.error);
          else if (typeof res.ms === "number") s.runs.push(res.ms);
          for (const f of res.fails ?? []) if (!s.fails.includes(f) && s.fails.length < 10) s.fails.push(f);
          log(`${engine.padEnd(8)} ${id.padEnd(10)} ${NAMES[k].padEnd(16)} ${res.error ? `ERROR ${res.error}` : fmtMs(res.ms)}${res.fails?.length ? `  (${res.fails.length} failed checks)` : ""}`);
        }
      }
    }
    for (const k of ready) await call("cleanup", [k], 60_000);
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
    parts.push(`### ${d.title} ${d.version ?? ""}`.trim() + "\n");
    parts.push(`- Browser: ${d.browser}; ${d.storage}.`);
    parts.push(`- Medians of ${d.runs} runs per case${d.skipped.length ? ` (skipped for the time budget: ${d.skipped.join("; ")})` : ""}; the engine's part of the run took ${d.seconds} s.`);
    if (d.error) parts.push(`- **The run stopped early**: ${d.error}`);
    for (const [k, e] of Object.entries(d.loadErrors)) parts.push(`- **${NAMES[k]} not run**: ${e}`);
    parts.push("");
    parts.push([`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n"));
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
