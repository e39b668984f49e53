// The playground page (www/) works through the built package, and a second
// tab's push shows up in the first one's table through its subscription.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setup, TIMEOUT } from "./helpers.mjs";

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
    await page.goto(`${env.url}/www/`);
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
