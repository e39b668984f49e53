// Encryption at rest and crypto-shredding forget (docs/privacy.md) in
// Chromium with a persistent profile: no payload in any file of the
// profile with encryption on (and found with it off: the control); the
// attacker test of issue 11 (the IndexedDB files from before a forget put
// back after it); several tabs and a worker on one encrypted store; the
// open option's errors.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cp, rm, readdir } from "node:fs/promises";
import { join } from "node:path";
import { setup, uniqueName, TIMEOUT } from "./helpers.mjs";
import { scanProfile, found } from "./disk.mjs";

let env;
before(async () => {
  env = await setup();
});
after(() => env?.close());

/** The pushes of `aggregates` (name -> count), each payload holding a marker `<tag>-<aggregate>-<i>`. */
const entries = (tag, aggregates) =>
  Object.entries(aggregates).map(([aggregate, n]) => ({
    aggregate,
    commands: Array.from({ length: n }, (_, i) => ({ action: `${aggregate}.noted`, payload: { text: `${tag}-${aggregate}-${i}`, i } })),
  }));

/** Pushes in a fresh page, one push per aggregate; with `folded`, closes the store once the fold has caught up. */
async function fill(name, options, tag, aggregates, { folded = false } = {}) {
  const page = await env.newPage();
  await page.evaluate(async ({ name, options, list, folded }) => {
    const store = await EventStore.open(name, options);
    for (const e of list) await store.push([e]);
    if (folded) await untilFolded(name);
    store.close();
  }, { name, options, list: entries(tag, aggregates), folded });
  await page.close();
}

/** The IndexedDB directory of the profile (Chromium: Default/IndexedDB). */
const idbDir = () => join(env.dir, "Default", "IndexedDB");

test("with encryption on, no payload is in any file of the profile; with it off, they are (the control)", { timeout: TIMEOUT * 2 }, async () => {
  const tag = `SEALED${Date.now().toString(36).toUpperCase()}`;
  const plainTag = `PLAIN${Date.now().toString(36).toUpperCase()}`;
  const aggregates = { "user.ann": 30, "user.bob": 20, "order.x1": 5 };
  // Folded and unfolded records both: one store of each, per kind.
  await fill(uniqueName("enc-scan"), { encryption: true }, tag, aggregates, { folded: true });
  await fill(uniqueName("enc-scan"), { encryption: true }, tag, aggregates);
  await fill(uniqueName("plain-scan"), undefined, plainTag, aggregates, { folded: true });
  await env.stop();
  const markers = [`${tag}-user.ann-0`, `${tag}-user.bob-19`, `${tag}-order.x1-4`, tag];
  const controls = [`${plainTag}-user.ann-0`, `${plainTag}-user.bob-19`, `${plainTag}-order.x1-4`];
  const hits = await scanProfile(env.dir, [...markers, ...controls]);
  await env.start();
  assert.deepEqual(found(hits, markers), [], `encrypted payloads found on disk: ${JSON.stringify(hits)}`);
  assert.ok(found(hits, controls).length > 0, "the control: unencrypted payloads are found by the same scan");
});

test("encrypted payloads read back after a restart; a folded log too", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("enc-restart");
  await fill(name, { encryption: true }, "R", { "user.a": 3, "user.b": 2 }, { folded: true });
  await env.restart();
  const page = await env.newPage();
  const out = await page.evaluate(async (name) => {
    const store = await EventStore.open(name, { encryption: true });
    const all = (await store.filter()).map((e) => e.payload.text);
    const it = [];
    for await (const e of store.events({ queries: [{ aggregate: "user.b" }] })) it.push(e.payload.text);
    store.close();
    return { all, it };
  }, name);
  assert.deepEqual(out.all, ["R-user.a-0", "R-user.a-1", "R-user.a-2", "R-user.b-0", "R-user.b-1"]);
  assert.deepEqual(out.it, ["R-user.b-0", "R-user.b-1"]);
  await page.close();
});

/**
 * The attacker test: the profile's IndexedDB files from before a forget,
 * put back after it (the vault file from after). `keepKeys`: the forget
 * does not destroy keys (the test hook), to show what shredding prevents.
 */
async function attack(keepKeys, { reopen = false } = {}) {
  const name = uniqueName(keepKeys ? "enc-attack-kept" : "enc-attack");
  const tag = `ATT${Date.now().toString(36).toUpperCase()}${keepKeys ? "K" : "S"}`;
  await fill(name, { encryption: true }, tag, { "user.gone": 3, "user.part": 2, "user.kept": 2 });
  await env.stop();
  const copy = `${env.dir}-idb-copy`;
  await rm(copy, { recursive: true, force: true });
  await cp(idbDir(), copy, { recursive: true });
  await env.start();
  let page = await env.newPage();
  const forgot = await page.evaluate(async ({ name, keepKeys }) => {
    const store = await EventStore.open(name, { encryption: true });
    if (keepKeys) store.__keepKeys();
    const all = await store.forget({ queries: [{ aggregate: "user.gone" }] });
    const [first] = await store.filter({ queries: [{ aggregate: "user.part" }], limit: 1 });
    const part = await store.forget({ queries: [{ aggregate: "user.part", sequence: { from: first.sequence, to: first.sequence + 1 } }] });
    const now = (await store.filter()).map((e) => [e.aggregate.join("."), e.payload?.text ?? null]);
    store.close();
    return { all, part, now };
  }, { name, keepKeys });
  await page.close();
  if (reopen) {
    // As a tab closed before its shred ended: the next open finishes it.
    page = await env.newPage();
    forgot.shredLeft = await page.evaluate(async (name) => {
      const raw = JSON.stringify(await rawRecords(name));
      const store = await EventStore.open(name, { encryption: true });
      store.close();
      return [raw.includes("shred"), JSON.stringify(await rawRecords(name)).includes("shred")];
    }, name);
    await page.close();
  }
  await env.stop();
  await rm(idbDir(), { recursive: true, force: true });
  await cp(copy, idbDir(), { recursive: true });
  await rm(copy, { recursive: true, force: true });
  await env.start();
  page = await env.newPage();
  const read = await page.evaluate(async (name) => {
    try {
      const store = await EventStore.open(name, { encryption: true });
      const out = (await store.filter()).map((e) => [e.aggregate.join("."), e.payload?.text ?? null, e.forgotten]);
      // Some events of a record picked (only theirs are decrypted).
      const picked = (await store.filter({ queries: ["user.gone", "user.kept"].map((aggregate) => ({ aggregate, sequence: { from: 2, to: 3 } })) }))
        .map((e) => [e.aggregate.join("."), e.sequence, e.payload?.text ?? null, e.forgotten]);
      store.close();
      return { out, picked };
    } catch (e) {
      return { error: `${e.code}: ${e.message}` };
    }
  }, name);
  await page.close();
  return { tag, forgot, read };
}

test("the attacker test: IndexedDB files from before a forget cannot give the forgotten payloads back; the other aggregates' still read", { timeout: TIMEOUT * 3 }, async () => {
  const { tag, forgot, read } = await attack(false);
  assert.equal(forgot.all, 3);
  assert.equal(forgot.part, 1, JSON.stringify(forgot));
  assert.ok(!read.error, read.error);
  const by = (a) => read.out.filter(([agg]) => agg === a);
  assert.equal(by("user.gone").length, 3, "the old records are back");
  assert.deepEqual(by("user.gone").map(([, p]) => p), [null, null, null], "the forgotten aggregate's payloads cannot be read: its key is destroyed");
  assert.ok(by("user.gone").every(([, , f]) => f === true), "and they read as forgotten");
  assert.deepEqual(by("user.part").map(([, p]) => p), [null, null], "a partly forgotten aggregate's old records were sealed under its old key, destroyed too");
  assert.deepEqual(by("user.kept").map(([, p]) => p), [`${tag}-user.kept-0`, `${tag}-user.kept-1`], "the other aggregates' payloads still read");
  // Before the attack, the partly forgotten aggregate kept its survivor (sealed again under a new key).
  assert.deepEqual(forgot.now.filter(([a]) => a === "user.part").map(([, p]) => p), [null, `${tag}-user.part-1`]);
  assert.deepEqual(read.picked, [["user.gone", 2, null, true], ["user.kept", 2, `${tag}-user.kept-1`, false]], "events picked out of a record read the same");
});

test("the attacker test without shredding (the test hook keeps the keys): the forgotten payloads come back, so the test above can fail", { timeout: TIMEOUT * 3 }, async () => {
  const { tag, read } = await attack(true);
  assert.ok(!read.error, read.error);
  const gone = read.out.filter(([a]) => a === "user.gone").map(([, p]) => p);
  assert.deepEqual(gone, [`${tag}-user.gone-0`, `${tag}-user.gone-1`, `${tag}-user.gone-2`], "with the keys kept, the old records decrypt");
  assert.deepEqual(read.picked, [["user.gone", 2, `${tag}-user.gone-1`, false], ["user.kept", 2, `${tag}-user.kept-1`, false]]);
});

test("several tabs and a worker on one encrypted store: each reads the others' payloads, subscriptions see them", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("enc-tabs");
  const pages = [await env.newPage(), await env.newPage()];
  // Tab 0 opens first (its keyring loads before the others make keys).
  await pages[0].evaluate(async (name) => {
    window.store = await EventStore.open(name, { encryption: true });
    window.seen = [];
    store.subscribe(undefined, (e) => seen.push(e.payload.secret ?? e.payload.text));
  }, name);
  await pages[1].evaluate(async (name) => {
    window.store = await EventStore.open(name, { encryption: true });
    await store.push([{ aggregate: "tab.one", commands: [{ action: "tab.one.x", payload: { secret: "TAB1-a" } }] }]);
  }, name);
  const fromWorker = await pages[1].evaluate(
    (name) =>
      new Promise((resolve) => {
        const w = new Worker("/tests/e2e/encryption-worker.js", { type: "module" });
        w.onerror = (e) => {
          w.terminate();
          resolve({ error: `the worker failed: ${e.message}` });
        };
        w.onmessage = ({ data }) => {
          if (data.ready) w.postMessage({ name, aggregate: "tab.one", count: 2 });
          else {
            w.terminate();
            resolve(data);
          }
        };
      }),
    name,
  );
  assert.ok(!fromWorker.error, fromWorker.error);
  assert.deepEqual(fromWorker.payloads.map((p) => p.secret), ["TAB1-a", "WORKER-tab.one-0", "WORKER-tab.one-1"]);
  const tab0 = await pages[0].evaluate(async () => {
    await store.push([{ aggregate: "tab.one", commands: [{ action: "tab.one.x", payload: { secret: "TAB0-b" } }] }]);
    for (let i = 0; i < 100 && seen.length < 4; i++) await new Promise((ok) => setTimeout(ok, 20));
    return { seen, all: (await store.filter()).map((e) => e.payload.secret) };
  });
  assert.deepEqual(tab0.all, ["TAB1-a", "WORKER-tab.one-0", "WORKER-tab.one-1", "TAB0-b"]);
  assert.deepEqual(tab0.seen, tab0.all, "the subscription delivered the other tab's and the worker's events, decrypted, in order");
  // One live slot for the aggregate, whoever wrote first.
  const slots = await pages[1].evaluate(async () => {
    const raw = (await rawRecords(store.name)).filter((r) => r.store === "batches").map((r) => r.json).join("\n");
    return [...new Set([...raw.matchAll(/\\"sealed\\":\\"(\d+):/g)].map((m) => m[1]))];
  });
  assert.equal(slots.length, 1, `every event of the aggregate is sealed under one slot: ${slots}`);
  for (const p of pages) {
    await p.evaluate(() => store.close());
    await p.close();
  }
});

test("errors: an encrypted store opened without the option, a plain store with events opened with it, a lost vault, a bad value", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("enc-errors");
  const page = await env.newPage();
  const out = await page.evaluate(async (name) => {
    const err = errorOf;
    const s = await EventStore.open(name, { encryption: true });
    await s.push([{ aggregate: "a.b", commands: [{ action: "a.b.c", payload: 1 }] }]);
    s.close();
    const out = {};
    out.without = await err(() => EventStore.open(name));
    out.bad = await err(() => EventStore.open(name, { encryption: 1 }));
    const plain = await EventStore.open(`${name}-plain`);
    await plain.push([{ aggregate: "a.b", commands: [{ action: "a.b.c", payload: 1 }] }]);
    plain.close();
    out.plainWith = await err(() => EventStore.open(`${name}-plain`, { encryption: true }));
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("eventstore-wasm");
    await dir.removeEntry(`${encodeURIComponent(name)}.keys`);
    out.lost = await err(() => EventStore.open(name, { encryption: true }));
    await EventStore.delete(name);
    await EventStore.delete(`${name}-plain`);
    // EventStore.delete removes the vault too.
    const again = await EventStore.open(name, { encryption: true });
    await again.push([{ aggregate: "a.b", commands: [{ action: "a.b.c", payload: 2 }] }]);
    again.close();
    await EventStore.delete(name);
    out.vaultLeft = (await Array.fromAsync(dir.keys())).filter((f) => f.startsWith(encodeURIComponent(name))).length;
    return out;
  }, name);
  await page.close();
  assert.equal(out.without?.code, "INVALID_ARGUMENT");
  assert.match(out.without.message, /is encrypted: open it with EventStore\.open\(.*\{ encryption: true \}\)/);
  assert.equal(out.bad?.code, "INVALID_ARGUMENT");
  assert.match(out.bad.message, /encryption must be true or false/);
  assert.equal(out.plainWith?.code, "INVALID_ARGUMENT");
  assert.match(out.plainWith.message, /without encryption/);
  assert.equal(out.lost?.code, "DATA_LOST");
  assert.match(out.lost.message, /key vault is gone.*keys are lost/);
  assert.equal(out.vaultLeft, 0, "EventStore.delete removed the vault file");
  for (const k of ["without", "bad", "plainWith", "lost"]) assert.ok(out[k].isError, `${k}: an Error instance`);
});

test("compact(), export and import work on an encrypted store (the same codec)", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("enc-portable");
  await fill(name, { encryption: true }, "P", { "user.a": 3, "user.b": 2 });
  const page = await env.newPage();
  const out = await page.evaluate(async (name) => {
    let store = await EventStore.open(name, { encryption: true });
    await store.forget({ queries: [{ aggregate: "user.a" }] });
    store = await store.compact();
    const afterCompact = (await store.filter()).map((e) => e.payload?.text ?? null);
    const text = await new Response(store.export()).text();
    store.close();
    const copy = await EventStore.import(`${name}-copy`, new Response(text).body, { encryption: true });
    const imported = (await copy.filter()).map((e) => e.payload?.text ?? null);
    copy.close();
    const raw = JSON.stringify(await rawRecords(`${name}-copy`));
    await EventStore.delete(name);
    await EventStore.delete(`${name}-copy`);
    return { afterCompact, exported: text.includes("P-user.b-1"), imported, rawClear: raw.includes("P-user.b") };
  }, name);
  await page.close();
  assert.deepEqual(out.afterCompact, [null, null, null, "P-user.b-0", "P-user.b-1"]);
  assert.ok(out.exported, "export writes plaintext payloads");
  assert.deepEqual(out.imported, out.afterCompact);
  assert.equal(out.rawClear, false, "the imported store is encrypted at rest");
});

test("a shred a closed tab left (forget committed, keys not yet destroyed) is finished by the next open", { timeout: TIMEOUT * 3 }, async () => {
  const { tag, forgot, read } = await attack(true, { reopen: true });
  assert.deepEqual(forgot.shredLeft, [true, false], "the forget left its shred entry; the open finished it and cleared it");
  assert.ok(!read.error, read.error);
  assert.deepEqual(read.out.filter(([a]) => a === "user.gone").map(([, p]) => p), [null, null, null], "the keys are destroyed: old records no longer open");
  assert.deepEqual(read.out.filter(([a]) => a === "user.kept").map(([, p]) => p), [`${tag}-user.kept-0`, `${tag}-user.kept-1`]);
});

test("a push sealed under a key a forget elsewhere is destroying is undone and done again under the new key, never lost (the shred fence)", { timeout: TIMEOUT }, async () => {
  const page = await env.newPage();
  const result = await page.evaluate(async (name) => {
    // The second connection never hears of the first one's rotations and
    // destroys (the vault's broadcasts are dropped): it seals under the
    // key it knew, as a tab whose message has not arrived yet would.
    const post = BroadcastChannel.prototype.postMessage;
    BroadcastChannel.prototype.postMessage = function (message) {
      if (this.name.startsWith("eventstore-wasm:vault:")) return;
      return post.call(this, message);
    };
    try {
      const a = await EventStore.open(name, { encryption: true });
      const b = await EventStore.open(name, { encryption: true });
      const one = (aggregate, text) => [{ aggregate, commands: [{ action: `${aggregate}.noted`, payload: { text } }] }];
      await a.push(one("user.part", "p1"));
      await a.push(one("user.part", "p2"));
      await b.push(one("user.part", "p3")); // b now seals user.part under its key
      await a.push(one("user.whole", "w1"));
      await b.push(one("user.whole", "w2"));
      // Part of user.part, all of user.whole: both keys are destroyed.
      await a.forget({ queries: [{ aggregate: "user.part", sequence: { from: 1, to: 2 } }] });
      await a.forget({ queries: [{ aggregate: "user.whole" }] });
      // b still holds the destroyed keys as live ones.
      await b.push(one("user.part", "p4"));
      await b.push(one("user.whole", "w3"));
      const read = async (store) => (await store.filter({ queries: [{ aggregate: "user.>" }] }))
        .map((e) => `${[e.aggregate].flat().join(".")}:${e.sequence}:${e.forgotten ? "forgotten" : e.payload?.text}`)
        .sort();
      const c = await EventStore.open(name, { encryption: true });
      const out = { a: await read(a), b: await read(b), c: await read(c) };
      a.close(); b.close(); c.close();
      return out;
    } finally {
      BroadcastChannel.prototype.postMessage = post;
    }
  }, uniqueName("enc-fence"));
  const want = ["user.part:1:forgotten", "user.part:2:p2", "user.part:3:p3", "user.part:4:p4", "user.whole:1:forgotten", "user.whole:2:forgotten", "user.whole:3:w3"];
  for (const who of ["a", "b", "c"]) assert.deepEqual(result[who], want, `read by ${who}`);
  await page.close();
});

/** In the page: makes the vault's binds never answer (as a tab closed before they land) until the returned function is called. */
const stallBinds = () => `(async () => {
  const { Vault } = await import("/pkg/vault.js");
  const bind = Vault.prototype.bind;
  window.stalled = [];
  Vault.prototype.bind = function (pairs) { window.stalled.push(...pairs); return new Promise(() => {}); };
  window.unstall = () => { Vault.prototype.bind = bind; };
})()`;

test("a push sealed under a reserved key slot whose bind never landed: it reads back, it is recorded with the push, and a forget elsewhere destroys that key on disk", { timeout: TIMEOUT }, async () => {
  const page = await env.newPage();
  await page.evaluate(stallBinds());
  await page.evaluate(() => import("/tests/e2e/vault-page.js"));
  const out = await page.evaluate(async (name) => {
    const { Vault } = await import("/pkg/vault.js");
    const one = (aggregate, text) => [{ aggregate, commands: [{ action: `${aggregate}.noted`, payload: { text } }] }];
    const a = await EventStore.open(name, { encryption: true });
    await a.push(one("user.gone", "g1"));
    await a.push(one("user.kept", "k1"));
    await a.push(one("user.gone", "g2"));
    const [[, gone]] = stalled.filter(([agg]) => agg === "user.gone");
    const records = (await rawRecords(name)).filter((r) => r.json.includes('"binds:'));
    unstall();
    // The key's bytes, as the vault file holds them (a vault of the test's own).
    const probe = await Vault.open(name);
    const key = (await probe.rawKeys([gone])).get(gone);
    probe.close();
    const latin = (bytes) => String.fromCharCode(...bytes);
    const inFile = async () => latin(await vaultFile(name)).includes(latin(key));
    const before = { inFile: await inFile(), status: (await rawSlot(name, gone)).status };
    // Another connection (its own vault), while the first is still open: it forgets user.gone.
    const b = await EventStore.open(name, { encryption: true });
    const erased = await b.forget({ queries: [{ aggregate: "user.gone" }] });
    const afterForget = { inFile: await inFile(), status: (await rawSlot(name, gone)).status };
    const read = async (s) => (await s.filter()).map((e) => `${e.aggregate.join(".")}:${e.forgotten ? "forgotten" : e.payload.text}`);
    const result = { records: records.map((r) => JSON.parse(r.json).value), gone, before, erased, afterForget, a: await read(a), b: await read(b) };
    a.close();
    b.close();
    return result;
  }, uniqueName("enc-unbound"));
  await page.close();
  assert.ok(out.records.length === 1 && JSON.parse(out.records[0]).some(([a, s]) => a === "user.gone" && s === out.gone), `the push recorded its unbound slot: ${JSON.stringify(out.records)}`);
  assert.deepEqual(out.before, { inFile: true, status: 4 }, "the slot is still reserved (its bind never landed), its key in the vault file");
  assert.equal(out.erased, 2);
  assert.deepEqual(out.afterForget, { inFile: false, status: 2 }, "the forget destroyed the key the push recorded: its bytes are in the vault file no more");
  const want = ["user.gone:forgotten", "user.kept:k1", "user.gone:forgotten"];
  assert.deepEqual(out.a, want);
  assert.deepEqual(out.b, want);
});

test("binds a closed tab left unconfirmed are finished by the next open: the slot becomes its aggregate's live slot, and the record of it goes", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("enc-recover");
  let page = await env.newPage();
  await page.evaluate(stallBinds());
  const slot = await page.evaluate(async (name) => {
    const store = await EventStore.open(name, { encryption: true });
    await store.push([{ aggregate: "user.r", commands: [{ action: "user.r.noted", payload: { text: "r1" } }] }]);
    return stalled[0][1];
  }, name);
  await page.close(); // without close(): the tab is gone, its binds never landed
  page = await env.newPage();
  const out = await page.evaluate(async (name) => {
    const { Vault } = await import("/pkg/vault.js");
    // The closed tab's owner lock is given back asynchronously.
    const owners = async () => (await navigator.locks.query()).held.filter((l) => l.name.startsWith(`eventstore-wasm:vault-owner:${name}:`)).length;
    for (let i = 0; i < 250 && (await owners()) > 0; i++) await new Promise((ok) => setTimeout(ok, 20));
    const recorded = async () => (await rawRecords(name)).filter((r) => r.json.includes('"binds:')).length;
    const before = await recorded();
    const store = await EventStore.open(name, { encryption: true });
    const after = await recorded();
    await store.push([{ aggregate: "user.r", commands: [{ action: "user.r.noted", payload: { text: "r2" } }] }]);
    const texts = (await store.filter()).map((e) => e.payload.text);
    store.close();
    const probe = await Vault.open(name);
    const live = (await probe.keysFor(["user.r"])).get("user.r")?.slot;
    probe.close();
    return { before, after, texts, live };
  }, name);
  await page.close();
  assert.equal(out.before, 1, "the closed tab's push recorded its unbound slot");
  assert.equal(out.after, 0, "the open finished the bind and removed the record");
  assert.equal(out.live, slot, "the reserved slot is the aggregate's live slot now");
  assert.deepEqual(out.texts, ["r1", "r2"]);
});

test("forgets of one aggregate's events in two tabs, at once and one after the other: each succeeds, and the events nobody forgot still read", { timeout: TIMEOUT }, async () => {
  const name = uniqueName("enc-two-forgets");
  const pages = [await env.newPage(), await env.newPage()];
  for (const p of pages) await p.evaluate((name) => EventStore.open(name, { encryption: true }).then((s) => { window.store = s; }), name);
  const ROUNDS = 6;
  await pages[0].evaluate(async (rounds) => {
    for (let r = 0; r < rounds; r++) {
      await store.push([{ aggregate: `user.r${r}`, commands: [1, 2, 3, 4].map((i) => ({ action: `user.r${r}.noted`, payload: { text: `r${r}-${i}` } })) }]);
    }
  }, ROUNDS);
  const forget = (page, aggregate, sequence) =>
    page.evaluate(({ aggregate, sequence }) => store.forget({ queries: [{ aggregate, sequence: { from: sequence, to: sequence + 1 } }] }), { aggregate, sequence });
  const counts = [];
  for (let r = 0; r < ROUNDS; r++) {
    const aggregate = `user.r${r}`;
    // Even rounds: at once (two shreds of one aggregate would destroy the
    // slot the other just sealed the survivors under); odd rounds: the
    // second tab's forget meets the first one's new slot, its retired live
    // slot and its moved fence.
    if (r % 2 === 0) counts.push(await Promise.all([forget(pages[0], aggregate, 1), forget(pages[1], aggregate, 2)]));
    else counts.push([await forget(pages[0], aggregate, 1), await forget(pages[1], aggregate, 2)]);
  }
  assert.deepEqual(counts, Array.from({ length: ROUNDS }, () => [1, 1]), "each forget erased its event");
  for (const p of pages) await p.evaluate(() => store.close());
  const reader = await env.newPage();
  const read = await reader.evaluate(async (name) => {
    const store = await EventStore.open(name, { encryption: true });
    const out = (await store.filter()).map((e) => `${e.aggregate.join(".")}:${e.sequence}:${e.forgotten ? "forgotten" : e.payload.text}`);
    store.close();
    return out;
  }, name);
  const want = Array.from({ length: ROUNDS }, (_, r) => [`user.r${r}:1:forgotten`, `user.r${r}:2:forgotten`, `user.r${r}:3:r${r}-3`, `user.r${r}:4:r${r}-4`]).flat();
  assert.deepEqual(read, want);
  for (const p of [...pages, reader]) await p.close();
});
