// A real full disk (issue 8): Chromium's profile on a 40 MB tmpfs, pushes of
// 100 KB incompressible payloads until one fails. The failure must be
// QUOTA_EXCEEDED and write nothing; later calls CLOSED (or QUOTA_EXCEEDED),
// never STORAGE; after space is freed and the browser restarted, open says
// DATA_LOST if the database was reset (or finds the events intact), and
// opens with onDataLost. Needs root (mount); skipped with a message if not.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { serve } from "../../scripts/serve.mjs";

const ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
const FILLER_MB = 22;
const MAX_PUSHES = 800; // 80 MB: twice the file system, so the loop always ends

let server, context;
const mounts = [];

before(async () => {
  server = await serve();
});

after(async () => {
  await context?.close().catch(() => {});
  await server?.close();
  for (const dir of mounts) {
    execFileSync("umount", ["-l", dir]);
    await rm(dir, { recursive: true, force: true });
  }
});

/** A fresh 40 MB tmpfs with a filler file; a reason to skip if mount is refused. */
async function smallDisk() {
  const dir = await mkdtemp(join(tmpdir(), "eventstore-diskfull-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=40m", "tmpfs", dir], { stdio: "pipe" });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    return { skip: `cannot mount a tmpfs here (${String(e.stderr || e.message).trim()}): run as root to test a full disk` };
  }
  mounts.push(dir);
  // Room to free later: the disk is full until this file goes. It also
  // keeps the free space below Chromium's quota (60% of the disk), so that
  // the disk fills before the quota does.
  await writeFile(join(dir, "filler"), Buffer.alloc(FILLER_MB << 20, 1));
  return { dir };
}

const launch = (dir) =>
  chromium.launchPersistentContext(join(dir, "profile"), { executablePath: "/usr/bin/chromium", args: ARGS, timeout: 60_000 });

async function page() {
  const p = await context.newPage();
  p.setDefaultTimeout(120_000);
  await p.goto(`${server.url}/tests/e2e/blank.html`);
  await p.evaluate(() => loadEventStore());
  // The store's loss marker as it is in OPFS (docs/storage.md), for the diagnostics.
  await p.evaluate(() => {
    window.readMarker = async () => {
      try {
        const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("eventstore-wasm");
        const read = (f) => dir.getFileHandle(f).then((h) => h.getFile()).then((f) => f.text(), (e) => String(e));
        return [await read("full.json"), await read("full.2.json")];
      } catch (e) {
        return String(e);
      }
    };
  });
  return p;
}

async function fillTheDisk(t, { commands, bytes }) {
  const { dir, skip } = await smallDisk();
  if (skip) return t.skip(skip);
  // A failed run leaves no browser behind (the server would wait for it).
  t.after(() => context?.close().catch(() => {}));
  context = await launch(dir);
  let p = await page();
  const filled = await p.evaluate(async ({ max, commands, size }) => {
    const payload = () => {
      const bytes = new Uint8Array(size);
      for (let i = 0; i < bytes.length; i += 65_536) crypto.getRandomValues(bytes.subarray(i, i + 65_536));
      let s = "";
      for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
      return btoa(s); // incompressible text, 4/3 of size
    };
    const describe = (e) => ({ code: e?.code, name: e?.name, message: String(e?.message ?? e) });
    window.store = await EventStore.open("full");
    // The loss marker records the log once something is committed; the
    // test's premise is a marker written before the disk fills (a loss
    // before the first marker write cannot be told from an empty store).
    await store.push([{ aggregate: "fill.M", commands: [{ action: "fill.M.added" }] }]);
    for (let i = 0; i < 100 && !String(await readMarker()).includes("lastPosition"); i++) await new Promise((r) => setTimeout(r, 50));
    const markedFirst = await readMarker();
    const ended = [];
    store.subscribe(undefined, () => {}, { fromPosition: "end", onError: (e) => ended.push(describe(e)) });
    let pushes = 0, failure = null;
    while (pushes < max) {
      const entry = { aggregate: "fill.A", commands: Array.from({ length: commands }, () => ({ action: "fill.A.added", payload: payload() })) };
      try {
        await withTimeout(store.push([entry]), 20_000, `push ${pushes + 1}`);
        pushes++;
      } catch (e) {
        failure = describe(e);
        break;
      }
    }
    // Later calls on the same store.
    const later = [];
    for (const call of [
      () => store.push([{ aggregate: "fill.B", commands: [{ action: "fill.B.added" }] }]),
      () => store.filter({ limit: 1 }),
      () => store.count ? store.count({}) : store.filter({}),
      () => store.forget({ queries: [{ aggregate: "fill.B" }] }),
    ]) {
      try { await withTimeout(call(), 20_000, String(call)); later.push(null); } catch (e) { later.push(describe(e)); }
    }
    await new Promise((r) => setTimeout(r, 1500));
    return { pushes, events: pushes * commands, failure, later, ended, markedFirst, marker: await readMarker() };
  }, { max: MAX_PUSHES, commands, size: (bytes * 3) / 4 });
  t.diagnostic(`full disk: ${JSON.stringify(filled)}`);

  assert.ok(String(filled.markedFirst).includes("lastPosition"), `the loss marker was written before the disk filled: ${JSON.stringify(filled.markedFirst)}`);
  assert.ok(filled.failure, `a push failed within ${MAX_PUSHES} pushes`);
  assert.equal(filled.failure.code, "QUOTA_EXCEEDED", `the disk-full failure: ${JSON.stringify(filled.failure)}`);
  for (const e of filled.later) {
    if (e) assert.ok(["CLOSED", "QUOTA_EXCEEDED"].includes(e.code), `a later call: ${JSON.stringify(e)}`);
  }
  for (const e of filled.ended) assert.ok(["CLOSED", "QUOTA_EXCEEDED"].includes(e.code), `a subscription ended: ${JSON.stringify(e)}`);

  // Free space, restart on the same profile.
  await rm(join(dir, "filler"));
  await context.close();
  context = await launch(dir);
  p = await page();
  const reopened = await p.evaluate(async () => {
    const describe = (e) => ({ code: e?.code, name: e?.name, message: String(e?.message ?? e), lastPosition: e?.lastPosition, position: e?.position, reason: e?.reason });
    const marker = await readMarker();
    let plain;
    try {
      const s = await EventStore.open("full");
      plain = { events: (await s.filter({ queries: [{ aggregate: "fill.A" }] })).length };
      s.close();
    } catch (e) {
      plain = describe(e);
    }
    const told = [];
    const s = await EventStore.open("full", { onDataLost: (lost) => told.push(lost) });
    const events = (await s.filter({ queries: [{ aggregate: "fill.A" }] })).length;
    let next;
    try {
      next = (await s.push([{ aggregate: "fill.C", commands: [{ action: "fill.C.added" }] }]))[0].position;
    } catch (e) {
      next = describe(e);
    }
    s.close();
    return { marker, plain, told, events, next };
  });
  t.diagnostic(`after restart: ${JSON.stringify(reopened)}`);

  // Chromium's whole-bucket reset: after a failed blob write it sometimes
  // deleted the origin's Origin Private File System along with the database
  // (the marker's directory gone before the restart; seen in about 1 run
  // of 8 of the 100 KB case, never in the 20 KB one). Nothing is left to
  // tell the loss by (docs/storage.md, "The loss marker"): the store opens
  // empty and works, as on a new origin.
  const bucketGone = (m) => typeof m === "string" && m.includes("NotFoundError");
  if (bucketGone(filled.marker) && bucketGone(reopened.marker) && reopened.plain.events === 0) {
    t.diagnostic("Chromium deleted the database and the OPFS directory of the marker together: the loss cannot be detected");
    assert.equal(reopened.told.length, 0);
    assert.equal(reopened.events, 0);
    assert.equal(reopened.next, 1, "the store opens empty and takes pushes");
  } else if (reopened.plain.code !== undefined) {
    // Chromium reset the database: the loss is reported, not passed over.
    assert.equal(reopened.plain.code, "DATA_LOST", JSON.stringify(reopened.plain));
    assert.ok(reopened.plain.lastPosition >= 1, "the marker knew events");
    assert.equal(reopened.told.length, 1, "onDataLost told once");
    assert.equal(reopened.told[0].position, reopened.events);
  } else {
    // The database survived: every accepted push is there, the failed one is not.
    assert.equal(reopened.plain.events, filled.events, "the accepted pushes, not the failed one");
    assert.equal(reopened.told.length, 0);
  }
  await context.close();
  context = undefined;
}

// Values this large are files of their own in Chromium ("blobs").
test("a full disk, one 100 KB event a push: QUOTA_EXCEEDED, later calls CLOSED or QUOTA_EXCEEDED, DATA_LOST or the events intact", { timeout: 300_000 }, (t) =>
  fillTheDisk(t, { commands: 1, bytes: 100_000 }));

// Values this small live in Chromium's LevelDB, whose I/O errors close the connection.
test("a full disk, five 20 KB events a push: the same", { timeout: 300_000 }, (t) =>
  fillTheDisk(t, { commands: 5, bytes: 20_000 }));
