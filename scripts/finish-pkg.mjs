// Completes pkg/package.json after wasm-pack: an ESM package with `exports`,
// `types` and a `files` whitelist that also holds wasm-bindgen's snippets.
import { readFile, writeFile, readdir } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

// wasm-pack runs no wasm-opt here (it would download binaryen); the binaryen
// npm package's wasm-opt shrinks the module instead.
const wasm = fileURLToPath(new URL("../pkg/eventstore_wasm_bg.wasm", import.meta.url));
const wasmOpt = fileURLToPath(new URL("../node_modules/.bin/wasm-opt", import.meta.url));
const features = ["bulk-memory", "nontrapping-float-to-int", "sign-ext", "mutable-globals", "reference-types", "multivalue"];
execFileSync(
  wasmOpt,
  ["-Oz", "--converge", "--strip-producers", "--strip-target-features", ...features.map((f) => `--enable-${f}`), wasm, "-o", wasm],
  { stdio: "inherit" },
);

// The glue's doc comments repeat the .d.ts, which keeps them for editors;
// whole-line comments of the snippets explain the Rust source they come
// from. Neither needs to be downloaded.
const glue = new URL("../pkg/eventstore_wasm.js", import.meta.url);
await writeFile(glue, (await readFile(glue, "utf8")).replace(/^[ \t]*\/\*\*[\s\S]*?\*\/\n/gm, ""));
const snippetsDir = new URL("../pkg/snippets/", import.meta.url);
for (const dir of await readdir(snippetsDir).catch(() => [])) {
  for (const f of await readdir(new URL(`${dir}/`, snippetsDir))) {
    const file = new URL(`${dir}/${f}`, snippetsDir);
    await writeFile(file, (await readFile(file, "utf8")).replace(/^[ \t]*\/\/.*\n/gm, ""));
  }
}

// wasm-bindgen declares `[Symbol.dispose]()` on classes: name the lib that
// types it, so that projects without "esnext.disposable" still type-check.
const dts = new URL("../pkg/eventstore_wasm.d.ts", import.meta.url);
const types = await readFile(dts, "utf8");
const reference = '/// <reference lib="esnext.disposable" />\n';
if (types.includes("Symbol.dispose") && !types.startsWith(reference)) await writeFile(dts, reference + types);

const path = new URL("../pkg/package.json", import.meta.url);
const pkg = JSON.parse(await readFile(path, "utf8"));
const entries = await readdir(new URL("../pkg/", import.meta.url));
const entry = pkg.module ?? pkg.main ?? "eventstore_wasm.js";
pkg.type = "module";
pkg.main = entry;
pkg.module = entry;
pkg.exports = {
  ".": { types: `./${pkg.types}`, import: `./${entry}`, default: `./${entry}` },
  "./eventstore_wasm_bg.wasm": "./eventstore_wasm_bg.wasm",
  "./package.json": "./package.json",
};
const files = new Set((pkg.files ?? []).map((f) => f.replace(/\/$/, "")));
if (entries.includes("snippets")) files.add("snippets");
for (const f of entries) if (/\.(js|d\.ts|wasm)$/.test(f)) files.add(f);
pkg.files = [...files].sort();
pkg.sideEffects = [`./${entry}`, "./snippets/*"];
await writeFile(path, JSON.stringify(pkg, null, 2) + "\n");
console.log(`pkg/package.json: ${pkg.name}@${pkg.version}, entry ${entry}`);
