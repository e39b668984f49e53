// Hand-written IndexedDB behind the benchmark's common interface, with the same
// schema as the Dexie variant: object store "events" (autoIncrement "position"),
// unique index "aggSeq" on [aggregate, sequence], multiEntry index "prefixes".
// One readwrite transaction per batch, getAll for reads, explicit commit().
import { prefixes } from "../workload.js";

export const name = "raw IndexedDB";
let db = null;

export async function ready() {}
export function memoryBytes() { return null; }

const req = (r) => new Promise((ok, fail) => { r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
const done = (tx) => new Promise((ok, fail) => {
  tx.oncomplete = () => ok();
  tx.onerror = () => fail(tx.error);
  tx.onabort = () => fail(tx.error ?? new Error("transaction aborted"));
});
const aggRange = (aggregate) => IDBKeyRange.bound([aggregate, 0], [aggregate, Infinity]);

export async function open(dbName) {
  const r = indexedDB.open(dbName, 1);
  r.onupgradeneeded = () => {
    const s = r.result.createObjectStore("events", { keyPath: "position", autoIncrement: true });
    s.createIndex("aggSeq", ["aggregate", "sequence"], { unique: true });
    s.createIndex("prefixes", "prefixes", { multiEntry: true });
  };
  db = await req(r);
  db.onversionchange = () => db && db.close();
}

/** One readwrite transaction: read each aggregate's head (key cursor), add, commit. */
function write(events) {
  const tx = db.transaction("events", "readwrite");
  const finished = done(tx);
  const store = tx.objectStore("events");
  const index = store.index("aggSeq");
  const aggregates = [...new Set(events.map((e) => e.aggregate))];
  const next = new Map();
  const createdAt = Date.now();
  let pending = aggregates.length;
  for (const a of aggregates) {
    index.openKeyCursor(aggRange(a), "prev").onsuccess = (ev) => {
      const c = ev.target.result;
      next.set(a, c ? c.key[1] : 0);
      if (--pending > 0) return;
      for (const e of events) {
        const sequence = next.get(e.aggregate) + 1;
        next.set(e.aggregate, sequence);
        store.add({
          id: crypto.randomUUID(), aggregate: e.aggregate, action: e.action, prefixes: prefixes(e.action),
          revision: 1, sequence, createdAt, payload: e.payload, forgotten: false,
        });
      }
      tx.commit();
    };
  }
  return finished.then(() => events.length);
}

export const appendBatch = (events) => write(events);
export const pushOne = (e) => write([e]);

export function loadAggregate(aggregate) {
  return req(db.transaction("events", "readonly").objectStore("events").index("aggSeq").getAll(aggRange(aggregate)));
}

export async function filterAdded() {
  const rows = await req(db.transaction("events", "readonly").objectStore("events").index("prefixes").getAll("user"));
  return rows.filter((r) => {
    const t = r.action.split(".");
    return t.length === 3 && t[2] === "added";
  });
}

export async function prefixQuery(prefix) {
  const rows = await req(db.transaction("events", "readonly").objectStore("events").index("prefixes").getAll(prefix));
  return rows.filter((r) => r.action.length > prefix.length);
}

/** One readwrite transaction: getAll the aggregate's records, put each back without payload. */
export function forgetAggregate(aggregate) {
  const tx = db.transaction("events", "readwrite");
  const finished = done(tx);
  const store = tx.objectStore("events");
  let count = 0;
  store.index("aggSeq").getAll(aggRange(aggregate)).onsuccess = (ev) => {
    for (const r of ev.target.result) {
      r.payload = null;
      r.forgotten = true;
      store.put(r);
      count++;
    }
    tx.commit();
  };
  return finished.then(() => count);
}

/** Pages of 1,000 by primary key (getAll) in one readonly transaction. */
export function streamAll(reducer) {
  return new Promise((ok, fail) => {
    const tx = db.transaction("events", "readonly");
    const store = tx.objectStore("events");
    let pages = 0;
    const page = (after) => {
      if (++pages > 1e6) return fail(new Error("streamAll: too many pages"));
      const r = store.getAll(after === 0 ? null : IDBKeyRange.lowerBound(after, true), 1000);
      r.onerror = () => fail(r.error);
      r.onsuccess = () => {
        const rows = r.result;
        try {
          for (const row of rows) reducer(row);
        } catch (e) {
          tx.abort();
          return fail(e);
        }
        if (rows.length < 1000) ok();
        else page(rows[rows.length - 1].position);
      };
    };
    page(0);
  });
}

export function countAll() {
  return req(db.transaction("events", "readonly").objectStore("events").count());
}

export function close() {
  if (db) db.close();
  db = null;
}

export async function destroy(dbName) {
  close();
  await req(indexedDB.deleteDatabase(dbName));
}

// The floor of issue 9: one record per push of 100 events (one JSON string),
// no index, one transaction per push; nothing else is kept.
let floorDb = null;

export async function openFloor(dbName) {
  await new Promise((ok) => { const r = indexedDB.deleteDatabase(dbName); r.onsuccess = r.onerror = r.onblocked = () => ok(); });
  const r = indexedDB.open(dbName, 1);
  r.onupgradeneeded = () => r.result.createObjectStore("pushes", { autoIncrement: true });
  floorDb = await req(r);
}

export function appendFloor(events) {
  const tx = floorDb.transaction("pushes", "readwrite");
  const finished = done(tx);
  tx.objectStore("pushes").add(JSON.stringify(events));
  tx.commit();
  return finished.then(() => events.length);
}

export async function closeFloor(dbName) {
  floorDb.close();
  floorDb = null;
  await new Promise((ok) => { const r = indexedDB.deleteDatabase(dbName); r.onsuccess = r.onerror = r.onblocked = () => ok(); });
}
