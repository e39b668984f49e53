// The README's example runs as written, against the built package.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setup, ROOT, TIMEOUT } from "./helpers.mjs";

const START = "<!-- readme-example:start -->";
const END = "<!-- readme-example:end -->";

/** The ```js block between the README's example markers. */
async function readmeExample() {
  const readme = await readFile(join(ROOT, "README.md"), "utf8").catch(() => assert.fail("README.md is missing"));
  const start = readme.indexOf(START);
  const end = readme.indexOf(END, start);
  if (start < 0 || end < 0) assert.fail(`README.md has no example between "${START}" and "${END}"`);
  const block = readme.slice(start + START.length, end).match(/```(?:js|javascript|mjs)\s*\n([\s\S]*?)\n```/);
  if (!block) assert.fail("the README example markers hold no ```js fenced block");
  return block[1];
}

let env, page;
const pageErrors = [];
before(async () => {
  env = await setup();
  page = await env.newPage({ load: false });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // A failed console.assert does not throw, so it is collected as an error too.
  page.on("console", (m) => {
    if (m.type() === "assert" || m.type() === "error") pageErrors.push(`console.${m.type()}: ${m.text()}`);
  });
});
after(() => env?.close());

test("the README example runs without throwing", { timeout: TIMEOUT }, async () => {
  const source = await readmeExample();
  assert.match(source, /from\s*["']eventstore-wasm["']/, "the example imports eventstore-wasm");
  // A blob: module cannot resolve "/pkg/...", so the import gets the absolute
  // URL of the package's entry (exports["."] of pkg/package.json).
  const pkg = JSON.parse(await readFile(join(ROOT, "pkg/package.json"), "utf8"));
  const entry = new URL(pkg.exports["."].import, `${env.url}/pkg/`).href;
  const code = source.replace(/(from\s*|import\s*\(\s*)(["'])eventstore-wasm\2/g, `$1"${entry}"`);
  const err = await page.evaluate(async (code) => {
    const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
    try {
      return await errorOf(() => import(url), 60000);
    } finally {
      URL.revokeObjectURL(url);
    }
  }, code);
  assert.equal(err, null, `the README example threw: ${JSON.stringify(err)}\n--- example ---\n${source}`);
  assert.deepEqual(pageErrors, [], "no uncaught error, console.error or failed console.assert in the page");
});
