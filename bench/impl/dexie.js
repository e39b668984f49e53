// Dexie 4 behind the benchmark's common interface, used the way an expert would:
// one record per event, a unique compound index [aggregate+sequence], a
// multiEntry index on the action's subject prefixes, bulk writes in one
// transaction per batch, getAll-based reads (toArray), modify() for forget.
import Dexie from "/node_modules/dexie/dist/dexie.mjs";
import { prefixes } from "../workload.js";

export const name = "Dexie";
let db = null;

export async function ready() {}
export function memoryBytes() { return null; }

export async function open(dbName) {
  db = new Dexie(dbName);
  db.version(1).stores({ events: "++position, &[aggregate+sequence], *prefixes" });
  await db.open();
}

const range = (t, aggregate) => t.where("[aggregate+sequence]").between([aggregate, 0], [aggregate, Infinity], true, true);

/** Reads each aggregate's head and writes the events, in one readwrite transaction. */
async function write(events) {
  const aggregates = [...new Set(events.map((e) => e.aggregate))];
  const createdAt = Date.now();
  await db.transaction("rw", db.events, async () => {
    const heads = await Promise.all(aggregates.map((a) => range(db.events, a).reverse().limit(1).keys()));
    const next = new Map(aggregates.map((a, i) => [a, heads[i].length ? heads[i][0][1] : 0]));
    const records = events.map((e) => {
      const sequence = next.get(e.aggregate) + 1;
      next.set(e.aggregate, sequence);
      return {
        id: crypto.randomUUID(), aggregate: e.aggregate, action: e.action, prefixes: prefixes(e.action),
        revision: 1, sequence, createdAt, payload: e.payload, forgotten: false,
      };
    });
    await db.events.bulkAdd(records);
  });
  return events.length;
}

export const appendBatch = (events) => write(events);
export const pushOne = (e) => write([e]);

export function loadAggregate(aggregate) {
  return range(db.events, aggregate).toArray();
}

export async function filterAdded() {
  const rows = await db.events.where("prefixes").equals("user").toArray();
  return rows.filter((r) => {
    const t = r.action.split(".");
    return t.length === 3 && t[2] === "added";
  });
}

export async function prefixQuery(prefix) {
  const rows = await db.events.where("prefixes").equals(prefix).toArray();
  return rows.filter((r) => r.action.length > prefix.length);
}

export function forgetAggregate(aggregate) {
  return db.transaction("rw", db.events, () => range(db.events, aggregate).modify({ payload: null, forgotten: true }));
}

/** Pages of 1,000 by primary key (getAll), events passed one by one in order. */
export async function streamAll(reducer) {
  let last = 0;
  for (let guard = 0; guard < 1e6; guard++) {
    const page = await db.events.where(":id").above(last).limit(1000).toArray();
    for (const r of page) reducer(r);
    if (page.length < 1000) return;
    last = page[page.length - 1].position;
  }
  throw new Error("streamAll: too many pages");
}

export function countAll() { return db.events.count(); }

export function close() {
  if (db) db.close();
  db = null;
}

export async function destroy(dbName) {
  close();
  await Dexie.delete(dbName);
}
