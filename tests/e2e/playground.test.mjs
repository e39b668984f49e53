// The playground page (www/) works through the built package, and a second
// tab's push shows up in the first one's table through its subscription; with
// a sync server (what `npm start` runs next to it), two databases of the demo
// (two devices) see each other's events.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setup, TIMEOUT } from "./helpers.mjs";
import { buildServer, startSyncServer } from "../../scripts/sync-server.mjs";

let env;
before(async () => {
  env = await setup();
});
after(() => env?.close());

const rows = (page) => page.$$eval("#events tr", (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));

test("push, wildcard filter and forget in the playground; a second tab's push appears live", { timeout: TIMEOUT }, async () => {
  const open = async () => {
    const page = await env.context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${env.url}/www/?sync=off`);
    await page.waitForSelector("body[data-ready=true]");
    return { page, errors };
  };
  const { page, errors } = await open();
  await page.click("#push button");
  await page.fill("#push input[name=aggregate]", "user.B");
  await page.fill("#push input[name=action]", "user.B.renamed");
  await page.click("#push button");
  await page.waitForFunction(() => document.querySelector("#log").textContent.startsWith("pushed user.B.renamed"));

  await page.fill("#filter input[name=subjects]", "user.*.added");
  await page.click("#filter button");
  await page.waitForFunction(() => document.querySelector("#log").textContent === "1 events");
  assert.deepEqual((await rows(page)).map((r) => r[3]), ["user.A.added"]);

  const second = await open();
  await second.page.fill("#push input[name=aggregate]", "user.C");
  await second.page.fill("#push input[name=action]", "user.C.added");
  await second.page.click("#push button");
  await page.waitForFunction(() => document.querySelectorAll("#events tr").length === 2, null, { timeout: 10_000 });
  assert.deepEqual((await rows(page)).map((r) => r[3]), ["user.A.added", "user.C.added"]);

  await page.click("#forget");
  await page.waitForFunction(() => document.querySelector("#log").textContent === "forgot the payload of 2 events");
  assert.deepEqual((await rows(page)).map((r) => r[5]), ["(forgotten)", "(forgotten)"]);
  assert.deepEqual(errors, []);
  assert.deepEqual(second.errors, []);
  await Promise.all([page.close(), second.page.close()]);
});

test("the demo syncs: two databases (two devices) see each other's events, status line and flush", { timeout: TIMEOUT }, async () => {
  buildServer({ quiet: true });
  const dir = await mkdtemp(join(tmpdir(), "eventstore-demo-sync-"));
  const server = await startSyncServer({ database: `sqlite://${join(dir, "demo.db")}`, origins: [env.origin] });
  try {
    const open = async (db) => {
      const page = await env.context.newPage();
      const errors = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(`${env.url}/www/?db=${db}&sync=${encodeURIComponent(server.url)}`);
      await page.waitForSelector("body[data-ready=true]");
      return { page, errors };
    };
    const one = await open("demo-one");
    const two = await open("demo-two");
    await one.page.fill("#push input[name=aggregate]", "user.S");
    await one.page.fill("#push input[name=action]", "user.S.added");
    await one.page.click("#push button");
    await one.page.click("#flush");
    await one.page.waitForFunction(() => document.querySelector("#log").textContent.startsWith("flushed"), null, { timeout: 20_000 });
    await one.page.waitForFunction(() => /online, pending 0, conflicts 0, remote position 1, error none/.test(document.querySelector("#sync-status").textContent), null, { timeout: 10_000 });
    // The other device's table shows it (live sync), with its remote position.
    await two.page.waitForFunction(() => [...document.querySelectorAll("#events tr")].some((tr) => tr.children[3].textContent === "user.S.added" && tr.children[6].textContent === "1"), null, { timeout: 20_000 });
    await two.page.fill("#push input[name=aggregate]", "user.T");
    await two.page.fill("#push input[name=action]", "user.T.added");
    await two.page.click("#push button");
    await two.page.click("#flush");
    await one.page.waitForFunction(() => [...document.querySelectorAll("#events tr")].some((tr) => tr.children[3].textContent === "user.T.added" && tr.children[6].textContent === "2"), null, { timeout: 20_000 });
    // The demo redraws its status line on its own timer: wait for it, then check it.
    await two.page.waitForFunction(() => /remote position 2/.test(document.querySelector("#sync-status").textContent), null, { timeout: 10_000 }).catch(() => {});
    assert.match(await two.page.textContent("#sync-status"), /online, pending 0, conflicts 0, remote position 2, error none/);
    assert.deepEqual([...one.errors, ...two.errors], []);
    await Promise.all([one.page.close(), two.page.close()]);
  } finally {
    await server.kill();
    await rm(dir, { recursive: true, force: true });
  }
});
