// The package as a bundler sees it: a Vite app imports "eventstore-wasm" by
// name (resolved through pkg/package.json's exports), is built, and runs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "vite";
import { serve, ROOT } from "../../scripts/serve.mjs";
import { setup, TIMEOUT } from "./helpers.mjs";

let env;
const apps = [];
before(async () => {
  env = await setup();
});
after(async () => {
  await env?.close();
  for (const app of apps) await rm(app, { recursive: true, force: true });
});

/** A copy of tests/<source> in a temporary directory, with pkg/ as node_modules/eventstore-wasm. */
async function appFrom(source) {
  const app = await mkdtemp(join(tmpdir(), "eventstore-vite-"));
  apps.push(app);
  await cp(join(ROOT, "tests", source), app, { recursive: true });
  await mkdir(join(app, "node_modules"));
  await symlink(join(ROOT, "pkg"), join(app, "node_modules/eventstore-wasm"), "dir");
  return app;
}

/** Builds `app` with Vite (`build` options added), serves it, returns what the page put in body[data-result]. */
async function buildAndRun(app, options = {}) {
  await build({ root: app, logLevel: "warn", build: { outDir: join(app, "dist"), ...options } });
  const server = await serve({ root: join(app, "dist") });
  try {
    const page = await env.context.newPage();
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => document.body.dataset.result, null, { timeout: 20_000 });
    const result = JSON.parse(await page.evaluate(() => document.body.dataset.result));
    await page.close();
    return result;
  } finally {
    await server.close();
  }
}

test("a Vite build of an app importing the package runs in Chromium", { timeout: TIMEOUT }, async () => {
  const result = await buildAndRun(await appFrom("vite-app"), { target: "es2022" });
  assert.deepEqual(result, { name: "Ada", sequence: 1 });
});

test("without init(), with Vite's default build target, the package loads itself", { timeout: TIMEOUT }, async () => {
  const app = await appFrom("vite-app-lazy");
  const result = await buildAndRun(app);
  assert.deepEqual(result, { name: "Ada", sequence: 1, error: "INVALID_SUBJECT" });
  const assets = await readdir(join(app, "dist/assets"));
  assert.equal(assets.filter((f) => f.endsWith(".wasm")).length, 1, `one wasm asset: ${assets}`);
  for (const f of assets.filter((f) => f.endsWith(".js"))) {
    const code = await readFile(join(app, "dist/assets", f), "utf8");
    assert.doesNotMatch(code, /(from|import)\s*\(?\s*["']node:/, `${f} imports no node: module`);
  }
});
