// Completes pkg/ after wasm-pack: the self-initialising entry (js/index.js)
// with its types, the npm README and the licences, and a package.json with
// `exports`, `types`, `files` (whitelist), `sideEffects` and keywords.
import { copyFile, readFile, writeFile, readdir } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { minifySync } from "rolldown/utils";
import { fileURLToPath } from "node:url";

// wasm-pack runs no wasm-opt here (it would download binaryen); the binaryen
// npm package's wasm-opt shrinks the module instead. The module's memory
// starts zeroed and Rust puts nothing below 1 MiB (its stack, then its
// data): --zero-filled-memory and --low-memory-unused let wasm-opt use
// that (0.7 KB less gzipped). --merge-similar-functions (not part of -Oz)
// merges functions that differ only in constants (0.45 KB). WASM_NAMES=1
// keeps the function names (for CPU profiles of a `wasm-pack build
// --profiling`, e.g. `node bench/run.mjs --cpuprofile=DIR`).
const wasm = fileURLToPath(new URL("../pkg/eventstore_wasm_bg.wasm", import.meta.url));
const wasmOpt = fileURLToPath(new URL("../node_modules/.bin/wasm-opt", import.meta.url));
const features = ["bulk-memory", "nontrapping-float-to-int", "sign-ext", "mutable-globals", "reference-types", "multivalue"];
execFileSync(
  wasmOpt,
  [...(process.env.WASM_NAMES ? ["-g"] : []), "--merge-similar-functions", "-Oz", "--converge", "--zero-filled-memory", "--low-memory-unused", "--strip-producers", "--strip-target-features", ...features.map((f) => `--enable-${f}`), wasm, "-o", wasm],
  { stdio: "inherit" },
);

// The glue and the snippets are minified (Rolldown's minifier, the one Vite
// uses): their comments repeat the .d.ts or explain the Rust source, and
// their local names are internal. Function and class names are kept
// (`EventStore.name`, stack traces). 3 KB less gzipped.
async function minify(file) {
  const { code, errors } = minifySync(fileURLToPath(file), await readFile(file, "utf8"), {
    module: true,
    compress: true,
    mangle: { keepNames: true },
  });
  if (errors.length > 0) throw new Error(`minifying ${file}: ${errors.map((e) => e.message).join("; ")}`);
  await writeFile(file, code);
}
await minify(new URL("../pkg/eventstore_wasm.js", import.meta.url));
const snippetsDir = new URL("../pkg/snippets/", import.meta.url);
for (const dir of await readdir(snippetsDir).catch(() => [])) {
  for (const f of await readdir(new URL(`${dir}/`, snippetsDir))) {
    await minify(new URL(`${dir}/${f}`, snippetsDir));
  }
}

// wasm-bindgen declares `[Symbol.dispose]()` on classes: name the lib that
// types it, so that projects without "esnext.disposable" still type-check.
const dts = new URL("../pkg/eventstore_wasm.d.ts", import.meta.url);
const types = await readFile(dts, "utf8");
const reference = '/// <reference lib="esnext.disposable" />\n';
if (types.includes("Symbol.dispose") && !types.startsWith(reference)) await writeFile(dts, reference + types);

// The package's own entry, types, README and licence (js/, npm/ and the
// repository root), over what wasm-pack wrote.
for (const [from, to] of [
  ["../js/index.js", "index.js"],
  ["../js/sync.js", "sync.js"],
  ["../js/portability.js", "portability.js"],
  ["../js/compact.js", "compact.js"],
  ["../js/vault.js", "vault.js"],
  ["../js/index.d.ts", "index.d.ts"],
  ["../npm/README.md", "README.md"],
  ["../LICENSE", "LICENSE"],
]) {
  await copyFile(new URL(from, import.meta.url), new URL(`../pkg/${to}`, import.meta.url));
}
// The entry keeps its code as written (its import() carries comments that
// bundlers read), without its whole-line comments: 1 KB less gzipped.
for (const file of ["index.js", "sync.js", "portability.js", "compact.js", "vault.js"]) {
  const entry = new URL(`../pkg/${file}`, import.meta.url);
  await writeFile(
    entry,
    (await readFile(entry, "utf8")).replace(/^[ \t]*\/\*\*[\s\S]*?\*\/\n/gm, "").replace(/^[ \t]*\/\/.*\n/gm, ""),
  );
}

const path = new URL("../pkg/package.json", import.meta.url);
const pkg = JSON.parse(await readFile(path, "utf8"));
const entries = await readdir(new URL("../pkg/", import.meta.url));
pkg.type = "module";
pkg.main = "index.js";
pkg.module = "index.js";
pkg.types = "index.d.ts";
pkg.exports = {
  ".": { types: "./index.d.ts", import: "./index.js", default: "./index.js" },
  "./eventstore_wasm_bg.wasm": "./eventstore_wasm_bg.wasm",
  "./package.json": "./package.json",
};
// What the tarball holds: the entry, the glue and its snippets, the wasm,
// the types, README and licences (npm adds package.json itself).
const files = new Set(["index.js", "sync.js", "portability.js", "compact.js", "vault.js", "index.d.ts", "README.md", "LICENSE"]);
if (entries.includes("snippets")) files.add("snippets");
for (const f of entries) if (/^eventstore_wasm.*\.(js|wasm)$/.test(f)) files.add(f); // the glue's .d.ts: index.d.ts replaces it
pkg.files = [...files].sort();
// The entry patches EventStore's statics (lazy loading): it and the glue it
// patches must not be dropped as side-effect-free.
pkg.sideEffects = ["./index.js", "./sync.js", "./portability.js", "./compact.js", "./eventstore_wasm.js", "./snippets/*"];
pkg.keywords = ["event-store", "event-sourcing", "indexeddb", "wasm", "webassembly", "offline-first", "cqrs", "gdpr"];
delete pkg.repository;
await writeFile(path, JSON.stringify(pkg, null, 2) + "\n");
console.log(`pkg/package.json: ${pkg.name}@${pkg.version}, entry ${pkg.module}`);
