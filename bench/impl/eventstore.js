// eventstore-wasm behind the benchmark's common interface.
// Loaded as the package is published for the web: the wasm-bindgen glue plus init().
import init, { EventStore, __setVault } from "/pkg/eventstore_wasm.js";

// Imported as `eventstore.js?enc` (bench/cases.js, implementation
// "eventstore-enc"): a second instance of this module whose stores are
// opened with { encryption: true }, the key vault handed over as the
// package's entry does.
const ENCRYPTED = new URL(import.meta.url).searchParams.has("enc");
const OPTIONS = ENCRYPTED ? { encryption: true } : undefined;

export const name = ENCRYPTED ? "eventstore-wasm, encrypted" : "eventstore-wasm";
let wasm = null;
let store = null;

/** Loads and instantiates the wasm module once per page; returns init()'s result. */
export async function ready() {
  if (!wasm) wasm = await init();
  if (ENCRYPTED) __setVault((await import("/pkg/vault.js")).Vault);
  return wasm;
}

/** Bytes of the wasm linear memory (the `memory` export of init()'s result). */
export function memoryBytes() {
  return wasm && wasm.memory ? wasm.memory.buffer.byteLength : null;
}

export async function open(dbName) {
  await ready();
  store = await EventStore.open(dbName, OPTIONS);
}

/**
 * One push of the workload's events: one push entry per run of consecutive
 * events of the same aggregate (25 entries of 4 commands in the workload).
 */
export async function appendBatch(events) {
  const entries = [];
  let entry = null;
  for (const e of events) {
    if (!entry || entry.aggregate !== e.aggregate) {
      entry = { aggregate: e.aggregate, commands: [] };
      entries.push(entry);
    }
    entry.commands.push({ action: e.action, payload: e.payload });
  }
  const stored = await store.push(entries);
  return stored.length;
}

export async function pushOne(e) {
  const stored = await store.push([{ aggregate: e.aggregate, commands: [{ action: e.action, payload: e.payload }] }]);
  return stored.length;
}

export function loadAggregate(aggregate) {
  return store.filter({ queries: [{ aggregate }] });
}

export function filterAdded() {
  return store.filter({ queries: [{ subjects: "user.*.added" }] });
}

/** Events whose action is below `prefix` (pattern `prefix.>`). */
export function prefixQuery(prefix) {
  return store.filter({ queries: [{ subjects: `${prefix}.>` }] });
}

export function forgetAggregate(aggregate) {
  return store.forget({ queries: [{ aggregate }] });
}

export function streamAll(reducer) {
  return store.filter({}, reducer);
}

/** Read-back helper (not timed): number of events in the log. */
export async function countAll() {
  let n = 0;
  await store.filter({}, () => { n++; });
  return n;
}

export function close() {
  if (store) store.close();
  store = null;
}

export async function destroy(dbName) {
  close();
  await ready();
  await EventStore.delete(dbName);
}

/** Unfolded records left in the database (the store folds them in the background). */
export function unfoldedLeft(dbName) {
  return new Promise((ok, fail) => {
    const r = indexedDB.open(dbName);
    r.onerror = () => fail(r.error);
    r.onsuccess = () => {
      const db = r.result;
      const c = db.transaction("batches").objectStore("batches").index("unfolded").count();
      c.onsuccess = () => { db.close(); ok(c.result); };
      c.onerror = () => { db.close(); fail(c.error); };
    };
  });
}
