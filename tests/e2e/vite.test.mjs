// The package as a bundler sees it: a Vite app imports "eventstore-wasm" by
// name (resolved through pkg/package.json's exports), is built, and runs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cp, mkdir, mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "vite";
import { serve, ROOT } from "../../scripts/serve.mjs";
import { setup, TIMEOUT } from "./helpers.mjs";

let env, app;
before(async () => {
  app = await mkdtemp(join(tmpdir(), "eventstore-vite-"));
  await cp(join(ROOT, "tests/vite-app"), app, { recursive: true });
  await mkdir(join(app, "node_modules"));
  await symlink(join(ROOT, "pkg"), join(app, "node_modules/eventstore-wasm"), "dir");
  env = await setup();
});
after(async () => {
  await env?.close();
  if (app) await rm(app, { recursive: true, force: true });
});

test("a Vite build of an app importing the package runs in Chromium", { timeout: TIMEOUT }, async () => {
  await build({ root: app, logLevel: "warn", build: { outDir: join(app, "dist"), target: "es2022" } });
  const server = await serve({ root: join(app, "dist") });
  try {
    const page = await env.context.newPage();
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => document.body.dataset.result, null, { timeout: 20_000 });
    const result = JSON.parse(await page.evaluate(() => document.body.dataset.result));
    assert.deepEqual(result, { name: "Ada", sequence: 1 });
    await page.close();
  } finally {
    await server.close();
  }
});
