// store.compact(): rewrites the store's IndexedDB database so that the bytes
// of erased payloads leave the browser's files where the backend lets them
// (docs/privacy.md, "In the browser", has what was measured on disk).
//
// The database is copied raw (every record of every object store, with its
// key, never decoded) into a holding database, deleted, created again with
// the same object stores and indexes (read from the old one), and filled
// back; then the holding database is deleted. Deleting a database is the one
// thing a page can do that makes Chromium compact LevelDB over that
// database's keys; the two deletes (the store's, then the holding
// database's, whose records were written to the same table files) make
// LevelDB rewrite the files that held the old records.
//
// All or nothing: the holding database carries a journal (object store
// JOURNAL) saying how far a compaction got; `recover(name)`, run by every
// `EventStore.open` before it opens, finishes one that a closed tab left
// half done (fill the store back) or drops one that had not finished its
// copy (the store is then untouched). Cross-tab: a Web Lock per store name
// (compaction and the check in open), and the other tabs' connections are
// closed first by a version change that is then aborted.

/** The holding database of a compaction of `name`. */
export const holding = (name) => `${name}#eventstore-wasm-compact`;
/** The holding database's journal object store (one record, key "state"). */
const JOURNAL = "journal";
/** Records per transaction when copying. */
const PAGE = 256;

const request = (r) =>
  new Promise((ok, fail) => {
    r.onsuccess = () => ok(r.result);
    r.onerror = () => fail(r.error);
  });
const finished = (tx) =>
  new Promise((ok, fail) => {
    tx.oncomplete = () => ok();
    tx.onerror = () => fail(tx.error);
    tx.onabort = () => fail(tx.error ?? new DOMException("the transaction was aborted", "AbortError"));
  });

function storageError(what, e) {
  return Object.assign(new Error(`compact: ${what}: ${e?.name ?? ""} ${e?.message ?? e}`.trim()), {
    code: e?.name === "QuotaExceededError" ? "QUOTA_EXCEEDED" : "STORAGE",
    cause: e,
  });
}

/** Runs `fn` holding the store's compaction lock (where Web Locks exist). */
function withLock(name, fn) {
  const locks = globalThis.navigator?.locks;
  if (typeof locks?.request !== "function") return fn();
  return locks.request(`eventstore-wasm:compact:${name}`, fn);
}

/**
 * Opens database `name`; `upgrade(db, tx, oldVersion)` runs on
 * `upgradeneeded`. With `existing`, a database that does not exist is not
 * created: resolves to null.
 */
function open(name, version, upgrade, { existing = false } = {}) {
  return new Promise((ok, fail) => {
    const r = version === undefined ? indexedDB.open(name) : indexedDB.open(name, version);
    let missing = false;
    r.onupgradeneeded = (event) => {
      if (existing && event.oldVersion === 0) {
        missing = true;
        r.transaction.abort();
        return;
      }
      upgrade?.(r.result, r.transaction, event.oldVersion);
    };
    r.onsuccess = () => {
      const db = r.result;
      // Step aside for other tabs as the store does (docs/storage.md).
      db.onversionchange = () => db.close();
      ok(db);
    };
    r.onerror = (event) => {
      event.preventDefault();
      if (missing) ok(null);
      else fail(r.error);
    };
  });
}

/** How long a delete or the eviction waits for other connections to close. */
const BLOCKED_MS = 10_000;

/**
 * Fails `fail` if request `r` stays blocked (a connection that does not
 * close on `versionchange`, such as one opened without this library) for
 * BLOCKED_MS. The request itself stays queued in IndexedDB and runs when
 * that connection closes; what it does then is safe (an aborted upgrade,
 * or a delete that the journal's next run repeats anyway).
 */
function whenBlocked(r, name, fail) {
  let timer;
  r.onblocked = () => {
    timer ??= setTimeout(() => {
      fail(Object.assign(new Error(`compact: a connection to ${JSON.stringify(name)} did not close within ${BLOCKED_MS / 1000} s (one not opened by this library?)`), { code: "STORAGE" }));
    }, BLOCKED_MS);
  };
  return () => clearTimeout(timer);
}

function deleteDatabase(name) {
  return new Promise((ok, fail) => {
    const r = indexedDB.deleteDatabase(name);
    const done = whenBlocked(r, name, fail);
    r.onsuccess = () => {
      done();
      ok();
    };
    r.onerror = () => {
      done();
      fail(r.error);
    };
  });
}

/** Whether database `name` exists, without creating it. */
async function exists(name) {
  if (typeof indexedDB.databases === "function") {
    return (await indexedDB.databases()).some((d) => d.name === name);
  }
  const db = await open(name, undefined, undefined, { existing: true });
  db?.close();
  return db !== null;
}

/** The object stores and indexes of `db`, as plain data. */
function schemaOf(db, tx) {
  return [...db.objectStoreNames].map((name) => {
    const store = tx.objectStore(name);
    return {
      name,
      keyPath: store.keyPath,
      autoIncrement: store.autoIncrement,
      indexes: [...store.indexNames].map((i) => {
        const index = store.index(i);
        return { name: i, keyPath: index.keyPath, unique: index.unique, multiEntry: index.multiEntry };
      }),
    };
  });
}

/**
 * Copies every record of `stores` from `from` to `to`, a page per
 * transaction on each side; `write(store, key, value)` puts one record.
 */
async function copyRecords(from, to, stores, write) {
  for (const name of stores) {
    let after;
    for (;;) {
      const tx = from.transaction(name, "readonly");
      const store = tx.objectStore(name);
      const range = after === undefined ? null : IDBKeyRange.lowerBound(after, true);
      const [keys, values] = await Promise.all([request(store.getAllKeys(range, PAGE)), request(store.getAll(range, PAGE))]);
      if (keys.length === 0) break;
      const out = to.transaction(name, "readwrite");
      const target = out.objectStore(name);
      keys.forEach((key, i) => write(target, key, values[i]));
      await finished(out);
      if (keys.length < PAGE) break;
      after = keys[keys.length - 1];
    }
  }
}

/**
 * Step 1: the store's records into the holding database, with the schema
 * in its journal, marked "copied" in the last transaction.
 */
async function copyOut(name) {
  const source = await open(name, undefined, undefined, { existing: true });
  if (!source) throw Object.assign(new Error(`compact: the store ${JSON.stringify(name)} does not exist`), { code: "STORAGE" });
  try {
    const names = [...source.objectStoreNames];
    const schema = names.length > 0 ? schemaOf(source, source.transaction(names, "readonly")) : [];
    const version = source.version;
    await deleteDatabase(holding(name));
    // Holding stores have out-of-line keys and no indexes: a key is copied
    // with its record, and indexes would only cost writes.
    const target = await open(holding(name), 1, (db) => {
      for (const s of names) db.createObjectStore(s);
      db.createObjectStore(JOURNAL);
    });
    try {
      await copyRecords(source, target, names, (store, key, value) => store.put(value, key));
      const tx = target.transaction(JOURNAL, "readwrite");
      tx.objectStore(JOURNAL).put({ state: "copied", name, version, schema }, "state");
      await finished(tx);
    } finally {
      target.close();
    }
  } finally {
    source.close();
  }
}

/**
 * Step 2 (also what recovery runs): delete the store, create it again with
 * the journal's schema and version, fill it back, mark the journal
 * "restored", delete the holding database.
 */
async function restore(name, journal) {
  const held = await open(holding(name));
  try {
    if (journal.state === "copied") {
      // Flush LevelDB's log first, so that the delete below compacts the
      // table files holding the store's old records (see sweep).
      await sweep(name);
      await deleteDatabase(name);
      const db = await open(name, journal.version, (db) => {
        for (const s of journal.schema) {
          const store = db.createObjectStore(s.name, { keyPath: s.keyPath, autoIncrement: s.autoIncrement });
          for (const i of s.indexes) store.createIndex(i.name, i.keyPath, { unique: i.unique, multiEntry: i.multiEntry });
        }
      });
      try {
        const inline = new Set(journal.schema.filter((s) => s.keyPath !== null).map((s) => s.name));
        await copyRecords(held, db, journal.schema.map((s) => s.name), (store, key, value) =>
          inline.has(store.name) ? store.put(value) : store.put(value, key),
        );
      } finally {
        db.close();
      }
      const tx = held.transaction(JOURNAL, "readwrite");
      tx.objectStore(JOURNAL).put({ ...journal, state: "restored", schema: [] }, "state");
      await finished(tx);
    }
  } finally {
    held.close();
  }
  await deleteDatabase(holding(name));
}

/** The journal of an unfinished compaction of `name`, or null. */
async function journalOf(name) {
  if (!(await exists(holding(name)))) return null;
  const held = await open(holding(name), undefined, undefined, { existing: true });
  if (!held) return null;
  try {
    if (!held.objectStoreNames.contains(JOURNAL)) return { state: "copying" };
    return (await request(held.transaction(JOURNAL, "readonly").objectStore(JOURNAL).get("state"))) ?? { state: "copying" };
  } finally {
    held.close();
  }
}

/** Finishes or undoes a compaction of `name` that a closed tab left (without the lock). */
async function recoverLocked(name) {
  const journal = await journalOf(name);
  if (journal === null) return;
  if (journal.state === "copying") await deleteDatabase(holding(name));
  else await restore(name, journal);
}

/**
 * Run by `EventStore.open` before it opens `name`: waits for a compaction
 * running in another tab, and finishes one a closed tab left half done.
 */
export function recover(name) {
  if (typeof indexedDB === "undefined") return undefined;
  return withLock(name, () => recoverLocked(name)).catch((e) => {
    throw storageError(`finishing an interrupted compaction of ${JSON.stringify(name)} failed`, e);
  });
}

/**
 * Closes the other connections to `name`: an upgrade to the next version,
 * aborted at once, makes every other connection get `versionchange` (the
 * store's rule closes them); the version stays as it was.
 */
async function evict(name) {
  const db = await open(name, undefined, undefined, { existing: true });
  if (!db) return;
  const version = db.version;
  db.close();
  await new Promise((ok, fail) => {
    const r = indexedDB.open(name, version + 1);
    const done = whenBlocked(r, name, fail);
    r.onupgradeneeded = () => r.transaction.abort();
    r.onsuccess = () => {
      done();
      r.result.close();
      fail(new Error("the upgrade was not aborted"));
    };
    r.onerror = (event) => {
      done();
      event.preventDefault();
      if (r.error?.name === "AbortError") ok();
      else fail(r.error);
    };
  });
}

/**
 * A database created and deleted: Chromium runs a LevelDB compaction of the
 * deleted database's key range, which first flushes LevelDB's log into a
 * table file and removes table files that earlier compactions made
 * obsolete (unless a LevelDB iterator still pins them: then they go at the
 * next compaction or when the browser restarts). Run before the store is
 * deleted, it puts the store's records into a table file, so that the
 * store's delete compacts that file down with its deletions (a record still
 * in the log would be flushed together with its deletion into a new file
 * that nothing compacts); run at the end, it removes what the compactions
 * left behind.
 */
async function sweep(name) {
  const scratch = `${name}#eventstore-wasm-sweep`;
  const db = await open(scratch, 1);
  db.close();
  await deleteDatabase(scratch);
}

/** Test hook: `stop` ("copied" or "deleted") leaves the compaction there, as a closed tab would. */
export async function compact(store, { stop } = {}) {
  const name = store.name;
  await withLock(name, async () => {
    store.close();
    try {
      await recoverLocked(name);
      await evict(name);
      await copyOut(name);
      const stopped = new Error(`compact stopped after "${stop}" (a test)`);
      if (stop === "copied") throw stopped;
      const journal = await journalOf(name);
      if (stop === "deleted") {
        await deleteDatabase(name);
        throw stopped;
      }
      await restore(name, journal);
      await sweep(name);
    } catch (e) {
      throw typeof e?.code === "string" ? e : storageError(`compacting ${JSON.stringify(name)} failed`, e);
    }
  });
}
