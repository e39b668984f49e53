// The npm tarball (`npm pack` of pkg/): what it holds, that its README's
// links work from the registry page, and that it runs once installed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
let dir, tarball, files;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "eventstore-pack-"));
  const [packed] = JSON.parse(
    execFileSync("npm", ["pack", "--json", "--pack-destination", dir], { cwd: join(ROOT, "pkg"), encoding: "utf8" }),
  );
  tarball = join(dir, packed.filename);
  files = packed.files.map((f) => f.path);
  await mkdir(join(dir, "node_modules/eventstore-wasm"), { recursive: true });
  execFileSync("tar", ["-xzf", tarball, "-C", join(dir, "node_modules/eventstore-wasm"), "--strip-components=1"]);
});
after(() => dir && rm(dir, { recursive: true, force: true }));

test("the tarball holds the entry, types, wasm, README and LICENSE, and nothing of the workspace", async () => {
  for (const f of ["package.json", "index.js", "index.d.ts", "eventstore_wasm.js", "eventstore_wasm_bg.wasm", "README.md", "LICENSE"]) {
    assert.ok(files.includes(f), `${f} is in the tarball: ${files.join(", ")}`);
  }
  for (const f of files) assert.doesNotMatch(f, /^(src|tests|target|node_modules|scripts)\//, `${f} does not belong in the package`);
  const license = await readFile(join(dir, "node_modules/eventstore-wasm/LICENSE"), "utf8");
  assert.match(license, /MIT License/);
  assert.match(license, /Apache License\s+Version 2\.0/);
  const size = (await stat(tarball)).size;
  console.log(`# tarball: ${(size / 1024).toFixed(1)} KiB, ${files.length} files`);
});

test("the README is written for npm users, and its links resolve in the tarball or are absolute", async () => {
  const readme = await readFile(join(dir, "node_modules/eventstore-wasm/README.md"), "utf8");
  assert.match(readme, /npm install eventstore-wasm/);
  assert.doesNotMatch(readme, /npm (start|test)\b/, "no workspace commands");
  const links = [...readme.matchAll(/!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)|<(?:a|img)\s[^>]*(?:href|src)="([^"]+)"/g)].map((m) => m[1] ?? m[2]);
  assert.ok(links.length > 0, "the README has links");
  for (const link of links) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(link)) {
      assert.match(link, /^(https:|mailto:)/, `absolute link ${link} uses https`);
    } else if (!link.startsWith("#")) {
      const target = posix.normalize(link.split("#")[0]);
      assert.ok(files.includes(target), `relative link ${link} resolves inside the tarball`);
    }
  }
});

test("installed from the tarball, the package runs under Node with fake-indexeddb", async () => {
  const script = join(dir, "app.mjs");
  const fake = join(ROOT, "node_modules/fake-indexeddb/auto/index.mjs");
  await writeFile(
    script,
    `import ${JSON.stringify(fake)};
import { EventStore } from "eventstore-wasm";
const store = await EventStore.open("packed");
await store.push([{ aggregate: "user.A", commands: [{ action: "user.A.added", payload: { name: "Ada" } }] }]);
const [e] = await store.filter({ queries: [{ subjects: "user.*.added" }] });
store.close();
console.log(JSON.stringify({ name: e.payload.name, sequence: e.sequence }));
`,
  );
  const out = execFileSync(process.execPath, [script], { cwd: dir, encoding: "utf8", timeout: 60_000 });
  assert.deepEqual(JSON.parse(out), { name: "Ada", sequence: 1 });
});
