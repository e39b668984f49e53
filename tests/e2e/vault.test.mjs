// The key vault of encryption at rest (js/vault.js, docs/privacy.md "Key
// vault") in Chromium with a persistent profile: keys survive a restart,
// pages racing get distinct slots, a destroyed key's bytes are in no file of
// the profile while a live key's are, what a createWritable() rewrite leaves,
// the vault in a dedicated worker, errors, and the cost of each operation.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { setup, uniqueName, TIMEOUT } from "./helpers.mjs";
import { scanProfile, found } from "./disk.mjs";

let env;
before(async () => {
  env = await setup();
});
after(() => env?.close());

/** A page with window.Vault and the helpers of vault-page.js. */
async function vaultPage() {
  const page = await env.newPage({ load: false });
  await page.evaluate(async () => {
    await import("/tests/e2e/vault-page.js");
    await loadVault();
  });
  return page;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

test("keys are AES-GCM keys that cannot be exported, kept on disk across a browser restart", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("vault-restart");
  let page = await vaultPage();
  const made = await page.evaluate(async (name) => {
    const vault = await Vault.open(name, { create: true });
    const keys = await vault.create(3);
    const out = [];
    for (const { slot, key } of keys) {
      out.push({ slot, sealed: await seal(key, `secret ${slot}`), extractable: key.extractable, algorithm: key.algorithm, usages: key.usages });
    }
    const exported = await vaultError(() => crypto.subtle.exportKey("raw", keys[0].key));
    vault.close();
    const file = await vaultFile(name);
    const raw = await rawSlot(name, 1);
    return { out, exported, size: file.length, magic: String.fromCharCode(...file.subarray(0, 8)), version: file[8], slotSize: file[12], raw,
      fromFile: await unseal(await keyFromLatin1(raw.key), out[1].sealed) };
  }, name);
  assert.deepEqual(made.out.map((k) => k.slot), [0, 1, 2], "slots are numbered from 0");
  for (const k of made.out) {
    assert.equal(k.extractable, false);
    assert.deepEqual(k.algorithm, { name: "AES-GCM", length: 256 });
    assert.deepEqual(k.usages.sort(), ["decrypt", "encrypt"]);
  }
  assert.ok(made.exported?.message, "exportKey of a vault key fails");
  assert.equal(made.magic, "ESWKEYS1");
  assert.equal(made.version, 2);
  assert.equal(made.slotSize, 96);
  assert.equal(made.size, 64 + 3 * 96, "a 64-byte header and three 96-byte slots");
  assert.equal(made.raw.status, 1, "a live slot's status byte");
  assert.deepEqual(made.raw.rest, new Array(63).fill(0), "no aggregate (create(n)): hash and padding are zeros");
  assert.equal(made.fromFile, "secret 1", "the slot's 32 bytes are the key");

  await env.restart();
  page = await vaultPage();
  const back = await page.evaluate(async ({ name, made }) => {
    const vault = await Vault.open(name);
    const texts = await unsealEach(vault, made);
    const unknown = (await vault.keys([7])).get(7);
    const more = await vault.create(2);
    vault.close();
    return { texts, unknown, more: more.map((m) => m.slot) };
  }, { name, made: made.out });
  assert.deepEqual(back.texts, ["secret 0", "secret 1", "secret 2"], "every key decrypts after the restart");
  assert.equal(back.unknown, null, "a slot never created reads as null");
  assert.deepEqual(back.more, [3, 4], "new slots follow the old ones");
  await page.close();
});

test("two pages creating keys at once get distinct slots, and each reads the other's keys", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("vault-race");
  const pages = [await vaultPage(), await vaultPage()];
  await pages[0].evaluate((name) => Vault.open(name, { create: true }).then((v) => v.close()), name);
  const race = (page, tab) =>
    page.evaluate(async ({ name, tab }) => {
      window.vault = await Vault.open(name);
      const runs = [];
      for (let i = 0; i < 10; i++) runs.push(vault.create(1 + (i % 3)));
      const made = (await Promise.all(runs)).flat();
      const out = [];
      for (const { slot, key } of made) out.push({ slot, sealed: await seal(key, `tab ${tab} slot ${slot}`) });
      return out;
    }, { name, tab });
  const [a, b] = await Promise.all([race(pages[0], 0), race(pages[1], 1)]);
  const slots = [...a, ...b].map((m) => m.slot).sort((x, y) => x - y);
  // Each page: 10 concurrent create() calls of 1, 2 or 3 keys, 19 keys.
  assert.equal(slots.length, 38);
  assert.deepEqual(slots, Array.from({ length: 38 }, (_, i) => i), "38 distinct slots, 0 to 37, none lost or shared");
  const readOther = (page, made) =>
    page.evaluate((made) => unsealEach(vault, made), made);
  assert.deepEqual(await readOther(pages[0], b), b.map((m) => `tab 1 slot ${m.slot}`), "page 0 reads page 1's keys");
  assert.deepEqual(await readOther(pages[1], a), a.map((m) => `tab 0 slot ${m.slot}`), "page 1 reads page 0's keys");
  for (const p of pages) await p.close();
});

test("a page keeping the vault busy gives it up in turns: another page gets in within a bounded time, and neither overwrites the other's slots", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("vault-turns");
  const pages = [await vaultPage(), await vaultPage()];
  await pages[0].evaluate((name) => Vault.open(name, { create: true }).then((v) => v.close()), name);
  // Page 0 asks for new keys back to back for 2 s: its session never
  // idles. Page 1 asks 8 times, 60 ms apart (page 0 has the vault back in
  // between): it gets in because it asks for a turn, within one of page
  // 0's operations; the 200 ms cap on holding the lock alone would make
  // it wait 100 ms on average.
  const busy = pages[0].evaluate(async (name) => {
    const vault = await Vault.open(name);
    const made = [];
    const until = performance.now() + 2000;
    for (let i = 0; performance.now() < until && i < 2000; i++) {
      for (const [a, { slot, key }] of await vault.keysFor([`busy.${i}.a`, `busy.${i}.b`], { create: true })) made.push([a, slot, [...key].join(",")]);
    }
    vault.close();
    return made;
  }, name);
  await new Promise((ok) => setTimeout(ok, 300));
  const other = await pages[1].evaluate(async (name) => {
    let t = performance.now();
    const vault = await Vault.open(name);
    const waits = [performance.now() - t];
    const made = [];
    for (let i = 0; i < 8; i++) {
      await new Promise((ok) => setTimeout(ok, 60));
      t = performance.now();
      for (const [a, { slot, key }] of await vault.keysFor([`other.${i}`], { create: true })) made.push([a, slot, [...key].join(",")]);
      waits.push(performance.now() - t);
    }
    vault.close();
    return { made, waits };
  }, name);
  const made = await busy;
  assert.ok(made.length > 100, `page 0 made ${made.length} keys`);
  assert.ok(median(other.waits.slice(1)) < 40, `page 1 was handed the vault: it waited ${other.waits.map((w) => w.toFixed(0)).join(", ")} ms`);
  assert.ok(Math.max(...other.waits) < 800, `page 1 waited ${other.waits.map((w) => w.toFixed(0)).join(", ")} ms while page 0 was busy`);
  const all = [...made, ...other.made];
  assert.equal(new Set(all.map(([, slot]) => slot)).size, all.length, "every key has a slot of its own");
  // A fresh vault reads every slot as the page that made it was given it.
  const onDisk = await pages[1].evaluate(async ({ name, slots }) => {
    const vault = await Vault.open(name);
    const raw = await vault.rawKeys(slots);
    vault.close();
    return slots.map((s) => [...raw.get(s)].join(","));
  }, { name, slots: all.map(([, slot]) => slot) });
  assert.deepEqual(onDisk, all.map(([, , key]) => key), "the file holds each key a page was given");
  for (const p of pages) await p.close();
});

test("keysFor: two pages asking for the same aggregates at once get one live slot each; rotate retires the old slot", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("vault-keysfor");
  const pages = [await vaultPage(), await vaultPage()];
  await pages[0].evaluate((name) => Vault.open(name, { create: true }).then((v) => v.close()), name);
  const ask = (page) =>
    page.evaluate(async (name) => {
      window.vault = await Vault.open(name);
      const runs = [];
      for (let i = 0; i < 6; i++) runs.push(vault.keysFor(["user.a", "user.b", `user.c${i % 2}`], { create: true }));
      const out = {};
      for (const m of await Promise.all(runs)) for (const [a, { slot, key }] of m) out[`${a}@${slot}`] = key.join(",");
      return out;
    }, name);
  const [a, b] = await Promise.all([ask(pages[0]), ask(pages[1])]);
  assert.deepEqual(a, b, "both pages see the same slot and key for each aggregate");
  assert.deepEqual(Object.keys(a).map((k) => k.split("@")[0]).sort(), ["user.a", "user.b", "user.c0", "user.c1"], "one live slot per aggregate");
  const after = await pages[1].evaluate(async () => {
    const none = await vault.keysFor(["user.never"]);
    const before = await vault.keysFor(["user.a"]);
    const rotated = await vault.rotate(["user.a"]);
    const now = await vault.keysFor(["user.a"]);
    const raw = await vault.rawKeys([before.get("user.a").slot, rotated.get("user.a").slot, 99]);
    await vault.destroy([before.get("user.a").slot]);
    const gone = await vault.rawKeys([before.get("user.a").slot]);
    return {
      none: none.size, old: rotated.get("user.a").old, was: before.get("user.a").slot, slot: rotated.get("user.a").slot, live: now.get("user.a").slot,
      oldStillReads: raw.get(before.get("user.a").slot)?.join(",") === before.get("user.a").key.join(","), never: raw.get(99), gone: gone.get(before.get("user.a").slot),
    };
  });
  assert.equal(after.none, 0, "without create, an aggregate without a slot is left out");
  assert.equal(after.old, after.was, "rotate names the slot it retired");
  assert.equal(after.live, after.slot, "the new slot is the live one");
  assert.notEqual(after.slot, after.was);
  assert.ok(after.oldStillReads, "a retired slot still gives its key until destroyed");
  assert.equal(after.never, undefined);
  assert.equal(after.gone, null, "a destroyed slot gives null");
  for (const p of pages) await p.close();
});

test("reserve and bind: reserved slots decrypt and belong to no aggregate; a bind makes them live, or retired when the aggregate has a live slot; binds are idempotent; a shred given slots destroys reserved and retired ones, never a live one", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("vault-reserve");
  const page = await vaultPage();
  const out = await page.evaluate(async (name) => {
    const vault = await Vault.open(name, { create: true });
    const other = await Vault.open(name);
    const reserved = await vault.reserve(4);
    const [r0, r1, r2, r3] = reserved.map(([slot]) => slot);
    const status = async (s) => (await rawSlot(name, s)).status;
    const ownerBytes = (await rawSlot(name, r0)).rest.slice(0, 16).map((b) => b.toString(16).padStart(2, "0")).join("");
    const before = {
      statuses: [await status(r0), await status(r3)],
      owner: ownerBytes === vault.owner,
      keysRead: (await vault.rawKeys([r0])).get(r0)?.join(",") === reserved[0][1].join(","),
      noAggregate: (await vault.keysFor(["user.a"])).size,
      open: (await vault.openOwners()).sort().join() === [vault.owner, other.owner].sort().join(),
    };
    // Another page's vault made user.b live meanwhile.
    const elsewhere = (await other.keysFor(["user.b"], { create: true })).get("user.b");
    const bound = await vault.bind([["user.a", r0], ["user.b", r1]]);
    // On disk: each bound slot's status and its aggregate's SHA-256 (the
    // two neighbours are written together), its key unchanged.
    const sha = async (s) => Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s))));
    const file = [await rawSlot(name, r0), await rawSlot(name, r1)];
    const onDisk = {
      statuses: file.map((f) => f.status),
      hashes: [file[0].rest.slice(0, 32).join() === (await sha("user.a")).join(), file[1].rest.slice(0, 32).join() === (await sha("user.b")).join()],
      keys: file.map((f, i) => f.key === String.fromCharCode(...reserved[i][1])),
    };
    const again = await vault.bind([["user.a", r0], ["user.b", r1]]);
    const live = await vault.keysFor(["user.a", "user.b"]);
    await vault.destroy([r2]);
    const destroyedBind = await vault.bind([["user.c", r2]]);
    const wrong = await vaultError(() => vault.bind([["user.z", r0]]));
    const notWritten = await vaultError(() => vault.bind([["user.z", 999]]));
    const badPairs = await vaultError(() => vault.bind([["user.z"]]));
    // A shred of user.a given every slot: the live r0 and user.b's retired r1
    // are kept (bound slots go by their aggregate), the reserved r3 goes.
    const shredded = await vault.shred(["user.a"], { slots: [r0, r1, r3] });
    const after = { r0: await status(r0), r1: await status(r1), r3: await status(r3) };
    const owners = (await other.openOwners()).length;
    vault.close();
    // The lock is given back asynchronously.
    let closed = false;
    for (let i = 0; i < 50 && !closed; i++) {
      closed = (await other.openOwners()).join() === other.owner;
      if (!closed) await new Promise((ok) => setTimeout(ok, 10));
    }
    other.close();
    return {
      before, onDisk, owners, closed, shredded: shredded.sort((x, y) => x - y), after, slots: [r0, r1, r2, r3], elsewhere: elsewhere.slot,
      bound: bound.map(([a, s, k]) => [a, s, k === null ? null : k.join(",") === elsewhere.key.join(",")]),
      again: again.map(([a, s, k]) => [a, s, k !== null]),
      live: [...live].map(([a, { slot }]) => [a, slot]), destroyedBind, wrong: wrong?.code, notWritten: notWritten?.code, badPairs: badPairs?.code,
    };
  }, name);
  const [r0, r1, r2, r3] = out.slots;
  assert.deepEqual(out.before, { statuses: [4, 4], owner: true, keysRead: true, noAggregate: 0, open: true }, "reserved (status 4), the owner's token in the hash field, keys readable, no aggregate");
  assert.deepEqual(out.bound, [["user.a", r0, null], ["user.b", out.elsewhere, true]], "user.a takes its reserved slot; user.b keeps the live slot made elsewhere (its key returned)");
  assert.deepEqual(out.onDisk, { statuses: [1, 3], hashes: [true, true], keys: [true, true] }, "in the file: r0 live, r1 a retired slot of user.b, each with its aggregate's hash and its own key");
  assert.deepEqual(out.again, [["user.a", r0, false], ["user.b", out.elsewhere, true]], "binding again changes nothing");
  assert.deepEqual(out.live, [["user.a", r0], ["user.b", out.elsewhere]]);
  assert.deepEqual(out.destroyedBind, [["user.c", null, null]], "a destroyed slot stays destroyed");
  assert.equal(out.wrong, "STORAGE", "a slot bound to another aggregate cannot be bound");
  assert.equal(out.notWritten, "STORAGE");
  assert.equal(out.badPairs, "INVALID_ARGUMENT");
  assert.deepEqual(out.shredded, [r3]);
  assert.deepEqual(out.after, { r0: 1, r1: 3, r3: 2 }, "live and another aggregate's retired slot kept, reserved destroyed");
  assert.equal(out.owners, 2);
  assert.ok(out.closed, "a closed vault's owner lock is released");
  await page.close();
});

test("destroy and a forget's shred overwrite the key in place: no file of the profile holds its bytes, while a live key's are found", { timeout: TIMEOUT * 2 }, async () => {
  const name = uniqueName("vault-shred");
  let page = await vaultPage();
  const other = await vaultPage();
  const made = await page.evaluate(async (name) => {
    window.vault = await Vault.open(name, { create: true });
    const keys = await vault.create(4);
    const sealed = [];
    for (const { key, slot } of keys) sealed.push(await seal(key, `payload ${slot}`));
    const raws = [];
    for (const { slot } of keys) raws.push((await rawSlot(name, slot)).key);
    return { sealed, raws };
  }, name);
  // The other page has seen slot 1's key before it is destroyed.
  assert.equal(await other.evaluate(async ({ name, sealed }) => {
    window.vault = await Vault.open(name);
    return unseal((await vault.keys([1])).get(1), sealed);
  }, { name, sealed: made.sealed[1] }), "payload 1");

  // Control: the scan finds every key while all are live.
  await env.restart();
  page = await vaultPage();
  let hits = await scanProfile(env.dir, made.raws);
  assert.deepEqual(found(hits, made.raws), made.raws, "every live key's 32 bytes are found on disk");
  const files = [...new Set(made.raws.flatMap((r) => hits[r]))];
  console.log(`live keys found in: ${files.join(", ")}`);
  assert.equal(files.length, 1, "one file holds the keys");
  const vaultPath = join(env.dir, files[0].replace(/ \(latin1\)$/, ""));
  const inode = (await stat(vaultPath)).ino;

  const other2 = await vaultPage();
  await other2.evaluate(async ({ name, sealed }) => {
    window.vault = await Vault.open(name);
    window.seen = await unseal((await vault.keys([1])).get(1), sealed);
  }, { name, sealed: made.sealed[1] });
  const after = await page.evaluate(async ({ name, sealed }) => {
    const vault = await Vault.open(name);
    const destroyed = await vault.destroy([1, 3, 99]);
    const keys = await vault.keys([0, 1, 2, 3]);
    const again = await vault.destroy([1]); // destroying twice is harmless
    // What a forget does (the store's own path): rotate, then shred the retired slot.
    const live = (await vault.keysFor(["agg.x"], { create: true })).get("agg.x");
    const next = (await vault.rotate(["agg.x"])).get("agg.x");
    const shredded = await vault.shred(["agg.x"]);
    vault.close();
    return {
      destroyed, again,
      shred: { old: live.slot, retired: next.old, shredded, rawOld: [...live.key].map((b) => String.fromCharCode(b)).join(""), rawNew: [...next.key].map((b) => String.fromCharCode(b)).join("") },
      here: [0, 1, 2, 3].map((s) => keys.get(s) === null),
      slot0: await unseal(keys.get(0), sealed[0]),
      raw1: await rawSlot(name, 1),
    };
  }, { name, sealed: made.sealed });
  assert.deepEqual(after.destroyed, [1, 3], "destroy returns the slots it overwrote (99 was never created)");
  assert.deepEqual(after.again, [1]);
  assert.deepEqual(after.here, [false, true, false, true], "destroyed slots read as null");
  assert.equal(after.slot0, "payload 0", "other keys still work");
  assert.equal(after.raw1.status, 2, "status 2: destroyed");
  assert.equal(after.raw1.key, "\0".repeat(32), "the key bytes are zeros");
  assert.equal(after.shred.retired, after.shred.old, "rotate retired the live slot");
  assert.deepEqual(after.shred.shredded, [after.shred.old], "shred destroyed the retired slot only");
  // The page that had seen slot 1's key hears of the destroy (BroadcastChannel);
  // a fresh vault reads it from the file.
  assert.equal(await other2.evaluate(async () => {
    for (let i = 0; i < 50 && (await vault.keys([1])).get(1) !== null; i++) await new Promise((ok) => setTimeout(ok, 20));
    return (await vault.keys([1])).get(1);
  }), null, "a vault that had the key cached forgets it");
  assert.equal(await other2.evaluate(async (name) => (await (await Vault.open(name)).keys([1])).get(1), name), null);

  await env.stop();
  hits = await scanProfile(env.dir, made.raws);
  const [k0, k1, k2, k3] = made.raws;
  console.log(`after destroy: live keys in ${[...new Set([k0, k2].flatMap((r) => hits[r]))].join(", ")}; destroyed keys in ${[k1, k3].flatMap((r) => hits[r]).join(", ") || "no file"}`);
  assert.deepEqual(found(hits, [k0, k2]), [k0, k2], "the live keys' bytes are still found (the scan works)");
  assert.deepEqual(found(hits, [k1, k3]), [], "no file of the profile holds a destroyed key's bytes");
  const { rawOld, rawNew } = after.shred;
  const shredHits = await scanProfile(env.dir, [rawOld, rawNew]);
  assert.deepEqual(found(shredHits, [rawNew]), [rawNew], "the rotated aggregate's new key is found");
  assert.deepEqual(found(shredHits, [rawOld]), [], "no file holds the key a shred destroyed");
  assert.equal((await stat(vaultPath)).ino, inode, "the same file (inode) was overwritten in place, not replaced");
  await env.start();
  await other.close().catch(() => {});
});

test("what a createWritable() rewrite of an OPFS file leaves in the profile's files (observation, printed)", { timeout: TIMEOUT }, async () => {
  const marker = (tag) => `${tag}-${Math.random().toString(36).slice(2).padEnd(12, "x")}-${"q".repeat(20)}`;
  const [oldText, newText] = [marker("old"), marker("new")];
  const write = (page, text) =>
    page.evaluate(async (text) => {
      const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("vault-probe", { create: true });
      const w = await (await dir.getFileHandle("probe.txt", { create: true })).createWritable();
      await w.write(text);
      await w.close();
    }, text);
  let page = await vaultPage();
  await write(page, oldText);
  await env.stop();
  let hits = await scanProfile(env.dir, [oldText]);
  assert.deepEqual(found(hits, [oldText]), [oldText], "control: the written text is found");
  console.log(`createWritable: the first version is in ${hits[oldText].join(", ")}`);
  const firstPath = hits[oldText][0].replace(/ \(latin1\)$/, "");
  const firstInode = (await stat(join(env.dir, firstPath))).ino;
  await env.start();
  page = await vaultPage();
  await write(page, newText);
  await env.stop();
  hits = await scanProfile(env.dir, [oldText, newText]);
  assert.deepEqual(found(hits, [newText]), [newText], "the new version is found");
  const newPath = hits[newText][0].replace(/ \(latin1\)$/, "");
  const newInode = (await stat(join(env.dir, newPath))).ino;
  console.log(`createWritable rewrite, browser closed: new version in ${hits[newText].join(", ")} (inode ${newInode}, the first was ${firstPath}, inode ${firstInode}); old version in ${hits[oldText].join(", ") || "no file"}`);
  await env.start();
});

test("in a dedicated worker the vault opens the file itself; the page reads the worker's keys", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("vault-worker");
  const page = await vaultPage();
  const r = await page.evaluate(async (name) => {
    const made = await askVaultWorker({ op: "create", name, n: 3, text: "from the worker" });
    const vault = await Vault.open(name);
    const texts = await unsealEach(vault, made);
    await vault.destroy([made[0].slot]);
    vault.close();
    const workerRead = await askVaultWorker({ op: "open", name, sealed: made });
    const unsupported = await askVaultWorker({ op: "unsupported", name: `${name}-x` });
    return { made, texts, workerRead, unsupported };
  }, name);
  assert.deepEqual(r.made.map((m) => [m.slot, m.extractable]), [[0, false], [1, false], [2, false]]);
  assert.deepEqual(r.texts, ["from the worker", "from the worker", "from the worker"]);
  assert.deepEqual(r.workerRead, { 0: null, 1: "from the worker", 2: "from the worker" }, "a worker's vault reads the page's destroy");
  assert.equal(r.unsupported?.code, "STORAGE", "no sync access handle: a clear error");
  assert.equal(r.unsupported?.reason, "unsupported");
  assert.match(r.unsupported?.message, /FileSystemSyncAccessHandle/);
  await page.close();
});

test("errors: bad arguments, a missing vault, a closed vault, a file that is not a vault; Vault.delete", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("vault-errors");
  const page = await vaultPage();
  const r = await page.evaluate(async (name) => {
    const out = {};
    out.emptyName = await vaultError(() => Vault.open(""));
    out.missing = await vaultError(() => Vault.open(name));
    out.missingDirless = await vaultError(() => Vault.open(`${name}-2`, { create: false }));
    const vault = await Vault.open(name, { create: true });
    out.badN = await vaultError(() => vault.create(0));
    out.badSlot = await vaultError(() => vault.keys([-1]));
    out.badSlots = await vaultError(() => vault.destroy("1"));
    const [{ slot }] = await vault.create(1);
    vault.close();
    out.closed = await vaultError(() => vault.keys([slot]));
    out.deleted = await Vault.delete(name);
    out.file = await vaultFile(name);
    out.afterDelete = await vaultError(() => Vault.open(name));
    out.deletedAgain = await Vault.delete(name);
    // A file of the vault's name that is not a vault.
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("eventstore-wasm", { create: true });
    const w = await (await dir.getFileHandle(`${encodeURIComponent(`${name}-bad`)}.keys`, { create: true })).createWritable();
    await w.write("not a key vault, just some text that is long enough to have a header and more");
    await w.close();
    out.bad = await vaultError(() => Vault.open(`${name}-bad`));
    await Vault.delete(`${name}-bad`);
    // A vault of a newer format.
    const newer = new Uint8Array(64);
    newer.set([...new TextEncoder().encode("ESWKEYS1"), 3, 0, 0, 0, 96]);
    const w2 = await (await dir.getFileHandle(`${encodeURIComponent(`${name}-v2`)}.keys`, { create: true })).createWritable();
    await w2.write(newer);
    await w2.close();
    out.newer = await vaultError(() => Vault.open(`${name}-v2`));
    await Vault.delete(`${name}-v2`);
    out.loneSurrogate = await vaultError(() => Vault.open("a\ud800"));
    // A long name (its file name is cut and hashed) and names OPFS would refuse as they are.
    out.names = [];
    for (const n of [`${name}-${"é".repeat(300)}`, ".", "..", "a/b\\c"]) {
      const v = await Vault.open(n, { create: true });
      const [{ slot }] = await v.create(1);
      v.close();
      const again = await Vault.open(n);
      out.names.push([(await again.keys([slot])).get(slot) !== null, await Vault.delete(n)]);
      again.close();
    }
    out.longFile = (await Array.fromAsync(dir.keys())).filter((f) => f.includes("~")).length;
    // A vault deleted under an open vault.
    const v2 = await Vault.open(name, { create: true });
    await Vault.delete(name);
    out.goneUnder = await vaultError(() => v2.create(1));
    v2.close();
    return out;
  }, name);
  assert.equal(r.emptyName?.code, "INVALID_ARGUMENT");
  assert.equal(r.missing?.code, "DATA_LOST");
  assert.equal(r.missing?.reason, "no-vault");
  assert.match(r.missing.message, /does not exist/);
  assert.equal(r.missingDirless?.code, "DATA_LOST");
  assert.equal(r.badN?.code, "INVALID_ARGUMENT");
  assert.equal(r.badSlot?.code, "INVALID_ARGUMENT");
  assert.match(r.badSlot.message, /-1/);
  assert.equal(r.badSlots?.code, "INVALID_ARGUMENT");
  assert.equal(r.closed?.code, "CLOSED");
  assert.equal(r.deleted, true, "Vault.delete says it removed a file");
  assert.equal(r.file, null, "the file is gone");
  assert.equal(r.afterDelete?.code, "DATA_LOST");
  assert.equal(r.deletedAgain, false);
  assert.equal(r.bad?.code, "STORAGE");
  assert.match(r.bad.message, /not a key vault/);
  assert.equal(r.goneUnder?.code, "DATA_LOST", "a vault whose file was deleted meanwhile");
  assert.equal(r.newer?.code, "VERSION_MISMATCH");
  assert.match(r.newer.message, /format 2/);
  assert.equal(r.loneSurrogate?.code, "INVALID_ARGUMENT");
  assert.deepEqual(r.names, [[true, true], [true, true], [true, true], [true, true]], "long and odd names work, and delete removes their files");
  assert.equal(r.longFile, 0, "no file of a long name is left");
  await page.close();
});

test("cost of each operation in Chromium (median of 7, printed)", { timeout: TIMEOUT }, async () => {
  const page = await vaultPage();
  const runs = [];
  for (let i = 0; i < 7; i++) {
    const name = uniqueName("vault-cost");
    runs.push(await page.evaluate(async (name) => {
      const t = () => performance.now();
      let t0 = t();
      const vault = await Vault.open(name, { create: true });
      const open = t() - t0;
      t0 = t();
      await vault.create(1);
      const create1 = t() - t0;
      t0 = t();
      const made = await vault.create(100);
      const create100 = t() - t0;
      const reader = await Vault.open(name);
      t0 = t();
      const keys = await reader.keys(made.map((m) => m.slot));
      const keys100 = t() - t0;
      t0 = t();
      await reader.keys(made.map((m) => m.slot));
      const keys100Cached = t() - t0;
      t0 = t();
      await vault.destroy([made[0].slot]);
      const destroy1 = t() - t0;
      reader.close();
      vault.close();
      await Vault.delete(name);
      if ([...keys.values()].some((k) => !k)) throw new Error("a key is missing");
      return { open, create1, create100, keys100, keys100Cached, destroy1 };
    }, name));
  }
  const summary = Object.fromEntries(Object.keys(runs[0]).map((k) => [k, `${median(runs.map((r) => r[k])).toFixed(1)} ms (${Math.min(...runs.map((r) => r[k])).toFixed(1)}-${Math.max(...runs.map((r) => r[k])).toFixed(1)})`]));
  console.log(`vault cost in Chromium, median (min-max) of 7: ${JSON.stringify(summary)}`);
  await page.close();
});
