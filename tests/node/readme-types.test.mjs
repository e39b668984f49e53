// tests/types/readme-example.js, which tsc checks under `strict`, is the
// README's example as written (between its readme-example markers).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const file = (path) => readFile(fileURLToPath(new URL(`../../${path}`, import.meta.url)), "utf8");

test("the type-checked copy of the README example is the README's example", async () => {
  const readme = await file("README.md");
  const start = readme.indexOf("<!-- readme-example:start -->");
  const block = readme.slice(start, readme.indexOf("<!-- readme-example:end -->", start)).match(/```js\s*\n([\s\S]*?)\n```/);
  assert.ok(start >= 0 && block, "README.md has the example markers around a ```js block");
  const copy = (await file("tests/types/readme-example.js")).replace(/^(\/\/.*\n)+/, "");
  assert.equal(copy.trimEnd(), block[1].trimEnd(), "copy the README example into tests/types/readme-example.js");
});
