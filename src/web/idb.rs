//! The IndexedDB backend (schema in `docs/storage.md`), on web-sys: rexie
//! cannot hook `versionchange`, and QUOTA_EXCEEDED needs the DOMException
//! name of an aborted transaction, so this small module talks to
//! IndexedDB directly through promise-wrapped requests.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Array, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{
    DomException, IdbCursor, IdbCursorDirection, IdbDatabase, IdbFactory, IdbIndexParameters,
    IdbKeyRange, IdbObjectStore, IdbObjectStoreParameters, IdbOpenDbRequest, IdbRequest,
    IdbTransaction, IdbTransactionMode, IdbVersionChangeEvent,
};

use super::request::{self, open_backwards, Completion, CursorValues, Request};
use super::vault::{Sealer, BINDS_PREFIX};
use crate::batch::{Batch, Opened, Segment, StoredEvent};
use crate::error::{Error, Result};
use crate::log::{Pending, Unfolded};
use crate::storage::{Storage, Transaction};
use crate::subject::KeyRange;

/// The IndexedDB version this library writes. A database at a higher
/// version was written by a newer, incompatible release.
pub const SCHEMA_VERSION: u32 = 5;
/// The object store holding the batches.
pub const STORE: &str = "batches";
/// The object store holding the sync state (since version 4), one record
/// under the key [`SYNC_KEY`].
pub const SYNC_STORE: &str = "sync";
const SYNC_KEY: &str = "state";
/// The key of an encrypted store's flag in the `sync` object store.
pub const ENCRYPTION_KEY: &str = "encryption";
/// The key of the aggregates whose keys a forget left to shred.
pub const SHRED_KEY: &str = "shred";
/// The key of an encrypted store's shred fence: a number that every shred
/// moves on in the transaction that seals the survivors under their new
/// slots, and that every encrypted write checks before it commits.
pub const FENCE_KEY: &str = "fence";
/// Index on `[aggregate, lastSequence]`, unique.
pub const BY_AGGREGATE: &str = "aggregate";
/// Unique index on `start`, the first position of a push (on its first
/// record only): two pushes can never start at the same position.
pub const BY_START: &str = "start";
/// Index on `createdAt` (since version 3): the records of one millisecond,
/// where `get` finds an event by its UUIDv7 id.
pub const BY_CREATED: &str = "createdAt";
/// Index on `unfolded` (since version 5): the unfolded records, which
/// hold whole pushes until they are folded (see [`crate::log`]).
pub const BY_UNFOLDED: &str = "unfolded";
/// Multi-entry index on `actions`: the actions a batch's aggregate does not
/// own (sparse: most records have none).
pub const BY_ACTION: &str = "actions";

#[wasm_bindgen(inline_js = r#"
export function expandPage(parts, reverse) {
  const out = [];
  for (const part of parts) {
    if (typeof part === "string") {
      for (const event of JSON.parse(part)) out.push(event);
      continue;
    }
    // A whole batch record (docs/storage.md): the same public events as the
    // Rust side's `Event`, field for field and in the same order.
    const events = typeof part.events === "string" ? JSON.parse(part.events) : part.events;
    const count = part.lastSequence - part.firstSequence + 1;
    if (!Array.isArray(events) || events.length !== count) {
      throw new Error(`corrupt batch ${part.lastPosition}: ${events.length} events for ${count} sequences`);
    }
    const first = part.lastPosition - count + 1;
    for (let k = 0; k < count; k++) {
      const i = reverse ? count - 1 - k : k;
      const e = events[i];
      out.push({
        id: e.id,
        aggregate: part.aggregate.split("."),
        action: e.action.split("."),
        revision: e.revision,
        sequence: part.firstSequence + i,
        position: first + i,
        createdAt: part.createdAt,
        payload: e.payload === undefined ? null : e.payload,
        forgotten: e.forgotten === true,
        remotePosition: e.remote ?? null,
      });
    }
  }
  return out;
}
export function recordsMeta(records) {
  const numbers = new Float64Array(records.length * 6);
  const texts = new Array(records.length);
  records.forEach((r, i) => {
    const unfolded = r.unfolded === undefined ? 0 : 1;
    numbers.set([r.lastPosition, r.firstSequence, r.lastSequence, r.createdAt, r.start === undefined ? 0 : 1, unfolded], i * 6);
    texts[i] = unfolded ? [] : [r.aggregate, ...(Array.isArray(r.actions) ? r.actions : [])];
  });
  return [numbers, texts];
}
export function wholePart(lastPosition, firstSequence, lastSequence, createdAt, aggregate, events) {
  return { lastPosition, firstSequence, lastSequence, createdAt, aggregate, events };
}
export function writeUnfolded(store, numbers, texts, added, plain) {
  texts.forEach((batches, i) => {
    const [lastPosition, start, createdAt] = numbers.subarray(i * 3, i * 3 + 3);
    const record = { lastPosition, createdAt, unfolded: 1, batches };
    if (start > 0) record.start = start;
    store.add(record);
    if (added) for (const b of JSON.parse(plain ? plain[i] : batches)) { b.createdAt = createdAt; added.push(b); }
  });
}
export function writeRecords(store, json, replace, added, plain) {
  for (const record of JSON.parse(json)) {
    if (replace) store.put(record); else store.add(record);
    if (added && !plain) added.push(record);
  }
  if (added && plain) for (const record of JSON.parse(plain)) added.push(record);
}
"#)]
extern "C" {
    /// The public events of a page: JSON arrays (strings) and whole batch
    /// records (their events backwards when `reverse`), in order, as one array.
    #[wasm_bindgen(js_name = expandPage, catch)]
    fn expand_page(parts: &Array, reverse: bool) -> std::result::Result<Array, JsValue>;
    /// Every field of the records but their events: `[numbers, texts]`,
    /// six numbers per record (`lastPosition`, `firstSequence`,
    /// `lastSequence`, `createdAt`, 1 if it has `start`, 1 if it is
    /// unfolded) and per record `[aggregate, ...actions]` (`[]` for an
    /// unfolded record).
    #[wasm_bindgen(js_name = recordsMeta)]
    fn records_meta(records: &Array) -> Array;
    /// `add`s (or `put`s) every record of a JSON array, appending the
    /// records to `added` if given; throws what `add` throws.
    #[wasm_bindgen(js_name = writeRecords, catch)]
    fn write_records(
        store: &IdbObjectStore,
        json: &str,
        replace: bool,
        added: Option<&Array>,
        plain: Option<String>,
    ) -> std::result::Result<(), JsValue>;
    /// A batch of an unfolded record as [`expand_page`] takes a record.
    #[wasm_bindgen(js_name = wholePart)]
    fn whole_part(
        last_position: f64,
        first_sequence: f64,
        last_sequence: f64,
        created_at: f64,
        aggregate: &str,
        events: &str,
    ) -> JsValue;
    /// `add`s unfolded records: three numbers each in `numbers` (key,
    /// `start` or 0, `createdAt`), their `batches` texts in `texts`; their
    /// batches, as records, are appended to `added` if given (from
    /// `plain`, the texts before sealing, in an encrypted store).
    #[wasm_bindgen(js_name = writeUnfolded, catch)]
    fn write_unfolded(
        store: &IdbObjectStore,
        numbers: &[f64],
        texts: &Array,
        added: Option<&Array>,
        plain: Option<Array>,
    ) -> std::result::Result<(), JsValue>;
}

/// Unfolded records a connection keeps from its own pushes, at most
/// (records of 100 events of 200 bytes: about 6 MB).
const CACHED_APPENDS: usize = 256;

/// How long a read transaction is reused by later reads (see
/// [`Database::read`]): a writer in another tab waits at most about this long.
const REUSE_MS: f64 = 25.0;

thread_local! {
    /// Write transactions created in this thread (any database): a read
    /// transaction created before one of them is never reused after it.
    static WRITES: Cell<u64> = const { Cell::new(0) };
    /// Guessed writes in flight in this thread (see `Storage::begin_guess`),
    /// and the tasks waiting for them to settle.
    static GUESSES: Cell<u32> = const { Cell::new(0) };
    static GUESS_WAITERS: RefCell<Vec<std::task::Waker>> = const { RefCell::new(Vec::new()) };
    /// Transactions created in this thread (for tests of [`Database::read`]).
    static CREATED: Cell<u64> = const { Cell::new(0) };
    /// Records read in this thread (for tests of what a read costs).
    static READ: Cell<u64> = const { Cell::new(0) };
    /// Pages requested ahead in this thread (see [`IdbTx::read_ahead`]).
    static AHEAD: Cell<u64> = const { Cell::new(0) };
}

/// How many batch records this thread has read so far (for tests).
pub fn records_read() -> u64 {
    READ.with(Cell::get)
}

/// How many pages reads of this thread requested ahead so far (for tests).
pub fn pages_read_ahead() -> u64 {
    AHEAD.with(Cell::get)
}

/// How many IndexedDB transactions this thread has created so far (for tests).
pub fn transactions_created() -> u64 {
    CREATED.with(Cell::get)
}

/// Why later calls fail after the browser closed the connection by itself
/// (IndexedDB's `close` event: a storage failure, the user clearing site data).
pub const BROWSER_CLOSED: &str = "the browser closed the database (for example after a storage failure such as a full disk); open the store again with EventStore.open";

/// Why later calls fail after another tab or worker deleted the database.
pub const DELETED_ELSEWHERE: &str = "another tab deleted the database";

/// Called once when the browser closes the connection by itself.
type OnClosed = RefCell<Option<Box<dyn Fn(&str)>>>;

/// An open database shared by the store and its transactions.
pub struct Database {
    db: IdbDatabase,
    closed: Rc<RefCell<Option<String>>>,
    on_closed: Rc<OnClosed>,
    _on_close: Closure<dyn FnMut()>,
    /// The last read transaction, for [`Database::read`].
    last_read: RefCell<Option<LastRead>>,
    /// When the last read began (`Date.now()`): the background fold waits
    /// for reads to pause too (see `fold.rs`).
    read_at: Cell<f64>,
    /// Unfolded records decoded so far, by key. They never change while
    /// unfolded (a forget folds the records it touches), so a key in a
    /// transaction's `unfolded` index always means the record cached here.
    unfolded: RefCell<HashMap<u64, Arc<Unfolded>>>,
    /// In an encrypted store, the sealed events texts of the records in
    /// `unfolded` (same keys, one text per batch), so that the fold writes
    /// them as they are instead of sealing them again.
    unfolded_sealed: RefCell<HashMap<u64, Rc<Vec<String>>>>,
    /// The unfolded records the last transaction that looked saw (a
    /// reused read transaction sees the same).
    last_pending: RefCell<Option<(IdbTransaction, Rc<Pending>)>>,
    /// The keys of an encrypted store (`None`: not encrypted): events are
    /// sealed where records are written and unsealed where they are read,
    /// so that everything above this module sees plaintext.
    sealer: RefCell<Option<Rc<Sealer>>>,
    _on_version_change: Closure<dyn FnMut(IdbVersionChangeEvent)>,
}

struct LastRead {
    tx: IdbTransaction,
    store: IdbObjectStore,
    writes: u64,
    created: f64,
}

impl Database {
    /// Opens (creating or upgrading) the database `name`.
    pub async fn open(name: &str) -> Result<Database> {
        let factory = factory()?;
        let request = factory
            .open_with_u32(name, SCHEMA_VERSION)
            .map_err(|e| storage_error(&e))?;
        let foreign = Rc::new(Cell::new(false));
        let upgrade = Closure::<dyn FnMut(IdbVersionChangeEvent)>::new({
            let request = request.clone();
            let foreign = foreign.clone();
            move |event: IdbVersionChangeEvent| {
                let outcome = upgrade(&request, event.old_version());
                if matches!(outcome, Ok(false)) {
                    foreign.set(true);
                }
                if !matches!(outcome, Ok(true)) {
                    // Aborting the upgrade makes the open request fail.
                    if let Some(tx) = request.transaction() {
                        let _ = tx.abort();
                    }
                }
            }
        });
        request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
        let result = wait(&request).await;
        request.set_onupgradeneeded(None);
        let db: IdbDatabase = match result {
            Ok(db) => db.unchecked_into(),
            Err(e) if exception_name(&e).as_deref() == Some("VersionError") => {
                return Err(Error::VersionMismatch {
                    name: name.to_owned(),
                    found: format!("schema version {}", current_version(&factory, name).await),
                    supported: format!("schema version {SCHEMA_VERSION}"),
                });
            }
            Err(_) if foreign.get() => return Err(not_ours(name)),
            Err(e) => return Err(storage_error(&e)),
        };
        if !db.object_store_names().contains(STORE) {
            db.close();
            return Err(not_ours(name));
        }
        let closed = Rc::new(RefCell::new(None));
        // Another tab upgrades or deletes the database: step aside at once
        // instead of blocking it, and say so to later calls.
        let on_version_change = Closure::<dyn FnMut(IdbVersionChangeEvent)>::new({
            let closed = closed.clone();
            let db = db.clone();
            move |event: IdbVersionChangeEvent| {
                db.close();
                let why = match event.new_version() {
                    None => DELETED_ELSEWHERE,
                    Some(_) => "another tab upgraded the database",
                };
                closed.replace(Some(why.to_owned()));
            }
        });
        db.set_onversionchange(Some(on_version_change.as_ref().unchecked_ref()));
        // The browser closed the connection (not `close()`): a storage
        // failure such as a full disk, or site data cleared.
        let on_closed: Rc<OnClosed> = Rc::default();
        let on_close = Closure::<dyn FnMut()>::new({
            let closed = closed.clone();
            let on_closed = on_closed.clone();
            move || {
                if closed.borrow().is_none() {
                    closed.replace(Some(BROWSER_CLOSED.to_owned()));
                }
                if let Some(f) = on_closed.borrow_mut().take() {
                    f(BROWSER_CLOSED);
                }
            }
        });
        db.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        // The waits on this connection then fail, and calls reject with
        // `CLOSED` (see `event_store::settle`).
        request::watch(&db);
        Ok(Database {
            db,
            closed,
            on_closed,
            _on_close: on_close,
            last_read: RefCell::new(None),
            read_at: Cell::new(0.0),
            unfolded: RefCell::default(),
            unfolded_sealed: RefCell::default(),
            last_pending: RefCell::new(None),
            sealer: RefCell::new(None),
            _on_version_change: on_version_change,
        })
    }

    /// Deletes the database `name`; other tabs' connections close themselves.
    pub async fn delete(name: &str) -> Result<()> {
        let request = factory()?
            .delete_database(name)
            .map_err(|e| storage_error(&e))?;
        wait(&request).await.map_err(|e| storage_error(&e))?;
        Ok(())
    }

    /// Closes the connection; later calls fail with `CLOSED`.
    pub fn close(&self) {
        self.closed.replace(Some("close() was called".to_owned()));
        self.db.close();
        if let Some(sealer) = self.sealer.take() {
            sealer.close();
        }
    }

    /// Makes this an encrypted connection (see [`Database::sealer`]).
    pub fn set_sealer(&self, sealer: Rc<Sealer>) {
        self.sealer.replace(Some(sealer));
    }

    /// The keys of an encrypted store, `None` for a store without encryption.
    pub fn sealer(&self) -> Option<Rc<Sealer>> {
        self.sealer.borrow().clone()
    }

    /// The value under `key` in the `sync` object store (`undefined` if none).
    pub async fn sync_entry(&self, key: &str) -> Result<JsValue> {
        let (tx, _) = self.create_as(IdbTransactionMode::Readonly, false)?;
        let request = tx
            .object_store(SYNC_STORE)
            .and_then(|s| s.get(&key.into()))
            .map_err(|e| storage_error(&e))?;
        wait(&request).await.map_err(|e| storage_error(&e))
    }

    /// Every record of binds (see [`IdbTx::binds_entries`]), read in a
    /// transaction of its own.
    pub async fn binds_entries(&self) -> Result<Vec<(String, String)>> {
        let (tx, _) = self.create_as(IdbTransactionMode::Readonly, false)?;
        let store = tx.object_store(SYNC_STORE).map_err(|e| storage_error(&e))?;
        binds_entries(&store).await
    }

    /// Deletes the record of binds under `key` if it still holds `json`
    /// (what was bound from it), in one transaction.
    pub async fn drop_binds_entry(&self, key: &str, json: &str) -> Result<()> {
        let (tx, _) = self.create_as(IdbTransactionMode::Readwrite, false)?;
        let done = Completion::new(&tx);
        let store = tx.object_store(SYNC_STORE).map_err(|e| storage_error(&e))?;
        let request = store.get(&key.into()).map_err(|e| storage_error(&e))?;
        let now = wait(&request).await.map_err(|e| storage_error(&e))?;
        if now.as_string().as_deref() == Some(json) {
            store.delete(&key.into()).map_err(|e| storage_error(&e))?;
        }
        super::request::commit_early(&tx);
        done.await.map_err(|e| storage_error(&e))
    }

    /// Takes `done` out of the `"shred"` entry (deleted once empty), in
    /// one transaction, so that a forget committed meanwhile keeps its own.
    pub async fn shredded(&self, done: &[String]) -> Result<()> {
        let (tx, _) = self.create_as(IdbTransactionMode::Readwrite, false)?;
        let finished = Completion::new(&tx);
        let store = tx.object_store(SYNC_STORE).map_err(|e| storage_error(&e))?;
        let request = store
            .get(&SHRED_KEY.into())
            .map_err(|e| storage_error(&e))?;
        let now = wait(&request).await.map_err(|e| storage_error(&e))?;
        if let Some(text) = now.as_string() {
            let left: Vec<String> = crate::seal::shred_entry(&text)?
                .into_iter()
                .filter(|a| !done.contains(a))
                .collect();
            let r = if left.is_empty() {
                store.delete(&SHRED_KEY.into()).map(drop)
            } else {
                let text = crate::seal::shred_list(None, &left)?;
                store
                    .put_with_key(&text.into(), &SHRED_KEY.into())
                    .map(drop)
            };
            r.map_err(|e| storage_error(&e))?;
        }
        super::request::commit_early(&tx);
        finished.await.map_err(|e| storage_error(&e))
    }

    /// Writes (or with `None`, deletes) the value under `key` in the `sync`
    /// object store, in a transaction of its own, awaited to its end.
    pub async fn put_sync_entry(&self, key: &str, value: Option<&str>) -> Result<()> {
        let (tx, _) = self.create_as(IdbTransactionMode::Readwrite, false)?;
        let done = Completion::new(&tx);
        let store = tx.object_store(SYNC_STORE).map_err(|e| storage_error(&e))?;
        match value {
            Some(v) => store.put_with_key(&v.into(), &key.into()).map(drop),
            None => store.delete(&key.into()).map(drop),
        }
        .map_err(|e| storage_error(&e))?;
        super::request::commit_early(&tx);
        done.await.map_err(|e| storage_error(&e))
    }

    /// Calls `f` (once) if the browser closes the connection by itself.
    pub fn on_closed(&self, f: impl Fn(&str) + 'static) {
        self.on_closed.replace(Some(Box::new(f)));
    }

    /// Why the connection is closed, if it is.
    pub fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    /// `CLOSED` once the connection is closed.
    /// When the last read began (`Date.now()`, 0: none yet).
    pub fn read_at(&self) -> f64 {
        self.read_at.get()
    }

    pub fn check_open(&self) -> Result<()> {
        match self.closed.borrow().as_ref() {
            Some(why) => Err(Error::Closed(why.clone())),
            None => Ok(()),
        }
    }

    /// A read-write transaction created now (its place in IndexedDB's
    /// order is fixed here), awaited to its end by `commit`.
    fn write(self: &Rc<Self>) -> Result<IdbTx> {
        let (tx, store) = self.create(IdbTransactionMode::Readwrite)?;
        Ok(self.writer(tx, store))
    }

    /// A read-write transaction for a fold: it changes no event, so a read
    /// transaction created before it may still be shared after it (see
    /// [`Database::read`]), and it is not counted for tests.
    pub fn fold_write(self: &Rc<Self>) -> Result<IdbTx> {
        let (tx, store) = self.create_as(IdbTransactionMode::Readwrite, false)?;
        Ok(self.writer(tx, store))
    }

    /// The [`IdbTx`] of a read-write transaction, awaited to its end by `commit`.
    fn writer(self: &Rc<Self>, tx: IdbTransaction, store: IdbObjectStore) -> IdbTx {
        let done = Some(Completion::new(&tx));
        // An encrypted store's write reads the shred fence first (see
        // `IdbTx::check_fence`).
        let fence_read = self
            .sealer()
            .and_then(|_| tx.object_store(SYNC_STORE).ok())
            .and_then(|s| s.get(&FENCE_KEY.into()).ok())
            .map(super::request::Request::new);
        IdbTx {
            current: RefCell::new((tx, store)),
            done,
            retry: Cell::new(None),
            held: RefCell::default(),
            added: Array::new(),
            db: self.clone(),
            pending: RefCell::new(None),
            folded: RefCell::default(),
            appended: RefCell::default(),
            appended_sealed: RefCell::default(),
            forgot: RefCell::default(),
            fence_bump: Cell::new(false),
            sealed_at: Cell::new(None),
            sealed_under: RefCell::default(),
            fence_read: RefCell::new(fence_read),
            ahead: RefCell::new(None),
            follows: Cell::new(None),
        }
    }

    fn create(&self, mode: IdbTransactionMode) -> Result<(IdbTransaction, IdbObjectStore)> {
        self.create_as(mode, true)
    }

    fn create_as(
        &self,
        mode: IdbTransactionMode,
        counted: bool,
    ) -> Result<(IdbTransaction, IdbObjectStore)> {
        self.check_open()?;
        if counted {
            if mode == IdbTransactionMode::Readwrite {
                WRITES.with(|w| w.set(w.get() + 1));
            }
            CREATED.with(|c| c.set(c.get() + 1));
        }
        let scope: Array = [STORE, SYNC_STORE]
            .iter()
            .map(|s| JsValue::from_str(s))
            .collect();
        let tx = self
            .db
            .transaction_with_str_sequence_and_mode(&scope, mode)
            .map_err(|e| match exception_name(&e).as_deref() {
                // The connection is closing: `close()`, another tab's
                // upgrade, or the browser after a storage failure.
                Some("InvalidStateError") => Error::Closed(
                    self.closed_reason()
                        .unwrap_or_else(|| BROWSER_CLOSED.to_owned()),
                ),
                _ => storage_error(&e),
            })?;
        let store = tx.object_store(STORE).map_err(|e| storage_error(&e))?;
        Ok((tx, store))
    }

    /// A read transaction created now, remembered for [`Database::read`].
    fn fresh_read(&self) -> Result<(IdbTransaction, IdbObjectStore)> {
        let (tx, store) = self.create(IdbTransactionMode::Readonly)?;
        self.last_read.replace(Some(LastRead {
            tx: tx.clone(),
            store: store.clone(),
            writes: WRITES.with(Cell::get),
            created: js_sys::Date::now(),
        }));
        Ok((tx, store))
    }

    /// A read transaction: the last one again when it may still be active,
    /// else a new one.
    ///
    /// Reads issued one after the other (each from the completion of the
    /// previous one) then share a transaction, which saves IndexedDB's
    /// per-transaction cost. They see what a new transaction would: while
    /// a read transaction is unfinished, no read-write transaction created
    /// after it can start (IndexedDB's scheduling, in every tab), and none
    /// created in this thread since has been (`WRITES`). If the last
    /// transaction is inactive or has ended after all, its first request
    /// throws (`TransactionInactiveError`, `InvalidStateError`) and
    /// [`IdbTx`] moves to a new one before anything was read. Reuse stops
    /// after [`REUSE_MS`] so that writers in other tabs are not held back.
    fn read(self: &Rc<Self>) -> Result<IdbTx> {
        self.check_open()?;
        self.read_at.set(js_sys::Date::now());
        let reusable = self.last_read.borrow().as_ref().and_then(|last| {
            (last.writes == WRITES.with(Cell::get) && js_sys::Date::now() - last.created < REUSE_MS)
                .then(|| (last.tx.clone(), last.store.clone()))
        });
        let (current, retry) = match reusable {
            Some(reused) => (reused, Some(self.clone())),
            None => (self.fresh_read()?, None),
        };
        Ok(IdbTx {
            current: RefCell::new(current),
            done: None,
            retry: Cell::new(retry),
            held: RefCell::default(),
            added: Array::new(),
            db: self.clone(),
            pending: RefCell::new(None),
            folded: RefCell::default(),
            appended: RefCell::default(),
            appended_sealed: RefCell::default(),
            forgot: RefCell::default(),
            fence_bump: Cell::new(false),
            sealed_at: Cell::new(None),
            sealed_under: RefCell::default(),
            fence_read: RefCell::new(None),
            ahead: RefCell::new(None),
            follows: Cell::new(None),
        })
    }
}

impl Drop for Database {
    /// A connection nobody can use any more is closed, so that it never
    /// blocks a delete or an upgrade in another tab (its `versionchange`
    /// handler goes with it).
    fn drop(&mut self) {
        self.db.set_onversionchange(None);
        self.db.close();
    }
}

fn not_ours(name: &str) -> Error {
    Error::Storage(format!(
        "database {name:?} exists but is not an eventstore-wasm database (no {STORE:?} object store)"
    ))
}

/// Creates or upgrades the schema, one step per version, in the upgrade
/// transaction. `Ok(false)`: the database is not ours (left as it was).
fn upgrade(request: &IdbOpenDbRequest, old_version: f64) -> Result<bool, JsValue> {
    let db: IdbDatabase = request.result()?.unchecked_into();
    if old_version >= 1.0 && !db.object_store_names().contains(STORE) {
        return Ok(false);
    }
    if old_version < 1.0 {
        let params = IdbObjectStoreParameters::new();
        params.set_key_path(&JsValue::from_str("lastPosition"));
        let store = db.create_object_store_with_optional_parameters(STORE, &params)?;
        let unique = IdbIndexParameters::new();
        unique.set_unique(true);
        let key: Array = ["aggregate", "lastSequence"]
            .iter()
            .map(|s| JsValue::from_str(s))
            .collect();
        store.create_index_with_str_sequence_and_optional_parameters(
            BY_AGGREGATE,
            &key,
            &unique,
        )?;
        let multi = IdbIndexParameters::new();
        multi.set_multi_entry(true);
        store.create_index_with_str_and_optional_parameters(BY_ACTION, "actions", &multi)?;
    }
    if old_version < 2.0 {
        // Version 2: the unique `start` of each push. Older records have
        // none, which is right: they are not the first of any new push.
        let tx = request
            .transaction()
            .ok_or_else(|| JsValue::from_str("no upgrade transaction"))?;
        let unique = IdbIndexParameters::new();
        unique.set_unique(true);
        tx.object_store(STORE)?
            .create_index_with_str_and_optional_parameters(BY_START, "start", &unique)?;
    }
    if old_version < 3.0 {
        // Version 3: `createdAt`, for `get`. IndexedDB fills it from the
        // records already stored, in this upgrade transaction.
        let tx = request
            .transaction()
            .ok_or_else(|| JsValue::from_str("no upgrade transaction"))?;
        tx.object_store(STORE)?
            .create_index_with_str(BY_CREATED, "createdAt")?;
    }
    if old_version < 4.0 {
        // Version 4: the sync state, in a store of its own. Records keep
        // their shape; events gain `remote` once synced.
        db.create_object_store(SYNC_STORE)?;
    }
    if old_version < 5.0 {
        // Version 5: unfolded records. Records of older versions are
        // batches, never unfolded: the new index starts empty.
        let tx = request
            .transaction()
            .ok_or_else(|| JsValue::from_str("no upgrade transaction"))?;
        tx.object_store(STORE)?
            .create_index_with_str(BY_UNFOLDED, "unfolded")?;
    }
    Ok(true)
}

/// The version of an existing database, for error messages.
async fn current_version(factory: &IdbFactory, name: &str) -> String {
    let Ok(request) = factory.open(name) else {
        return "unknown".into();
    };
    match wait(&request).await {
        Ok(db) => {
            let db: IdbDatabase = db.unchecked_into();
            // IndexedDB versions are integers; an integer formats without
            // pulling float formatting into the module.
            let version = db.version() as u64;
            db.close();
            version.to_string()
        }
        Err(_) => "unknown".into(),
    }
}

fn factory() -> Result<IdbFactory> {
    Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB"))
        .ok()
        .and_then(|f| f.dyn_into::<IdbFactory>().ok())
        .ok_or_else(|| Error::Storage("IndexedDB is not available in this context".into()))
}

/// Waits for a request; `Ok(result)` or `Err(the request's DOMException)`.
async fn wait(request: &IdbRequest) -> Result<JsValue, JsValue> {
    Request::new(request.clone()).await
}

fn exception_name(e: &JsValue) -> Option<String> {
    e.dyn_ref::<DomException>().map(|d| d.name())
}

/// Whether a browser's message says the disk is full: Chromium's LevelDB
/// (`UnknownError: … IO error: … FILE_ERROR_NO_SPACE`) and its files for
/// large values (`DataError: Failed to write blobs (IOError)`, seen only on
/// a full disk: Chromium gives no finer cause), SQLite under Firefox and
/// WebKit (`database or disk is full`, `SQLITE_FULL`), the operating
/// system's `ENOSPC` (`No space left on device`).
fn says_disk_full(message: &str) -> bool {
    // Lower case, compared byte by byte: `str::contains` brings a 2 KB
    // substring searcher into the module for these few short messages.
    const SIGNS: [&[u8]; 6] = [
        b"no_space",
        b"no space",
        b"disk is full",
        b"sqlite_full",
        b"enospc",
        b"failed to write blobs",
    ];
    let lower = message.to_ascii_lowercase();
    SIGNS
        .iter()
        .any(|s| lower.as_bytes().windows(s.len()).any(|w| w == *s))
}

/// Maps a DOMException (or anything thrown) to the error codes of SPEC section 6.
pub fn storage_error(e: &JsValue) -> Error {
    match e.dyn_ref::<DomException>() {
        Some(d) if d.name() == "QuotaExceededError" => Error::QuotaExceeded(d.message()),
        Some(d) if says_disk_full(&d.message()) => {
            Error::QuotaExceeded(format!("{}: {}", d.name(), d.message()))
        }
        // Chromium, when it force-closes the connection (a storage failure,
        // the origin's data cleared): `UnknownError: Connection is closing
        // because of: …`, sometimes before the `close` event reaches us.
        Some(d) if d.message().starts_with("Connection is closing") => {
            Error::Closed(format!("{BROWSER_CLOSED} ({}: {})", d.name(), d.message()))
        }
        Some(d) if d.name() == "ConstraintError" => {
            Error::Constraint(format!("{}: {}", d.name(), d.message()))
        }
        Some(d) => Error::Storage(format!("{}: {}", d.name(), d.message())),
        None => Error::Storage(
            e.as_string()
                .unwrap_or_else(|| String::from(js_sys::JsString::from(e.clone()))),
        ),
    }
}

/// [`Storage`] over an open [`Database`].
#[derive(Clone)]
pub struct IdbStorage(pub Rc<Database>);

impl Storage for IdbStorage {
    type Tx = IdbTx;

    async fn read(&self) -> Result<IdbTx> {
        GuessesSettled.await;
        self.0.read()
    }

    async fn write(&self) -> Result<IdbTx> {
        GuessesSettled.await;
        self.0.write()
    }

    fn begin_guess(&self) {
        GUESSES.with(|g| g.set(g.get() + 1));
    }

    fn end_guess(&self) {
        let left = GUESSES.with(|g| {
            g.set(g.get().saturating_sub(1));
            g.get()
        });
        if left == 0 {
            for waker in GUESS_WAITERS.with(|w| w.take()) {
                waker.wake();
            }
        }
    }
}

/// Ready once no guessed write is in flight in this thread (any database).
struct GuessesSettled;

impl std::future::Future for GuessesSettled {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if GUESSES.with(Cell::get) == 0 {
            return std::task::Poll::Ready(());
        }
        GUESS_WAITERS.with(|w| w.borrow_mut().push(cx.waker().clone()));
        std::task::Poll::Pending
    }
}

/// One IndexedDB transaction on the `batches` store.
pub struct IdbTx {
    current: RefCell<(IdbTransaction, IdbObjectStore)>,
    /// Settles when a write transaction completes or aborts (`None` for a read,
    /// which ends by itself).
    done: Option<Completion>,
    /// For a reused read transaction, until its first request: where to
    /// get a new one if it turns out to have ended.
    retry: Cell<Option<Rc<Database>>>,
    /// The records read, by key, whose events text has not been copied
    /// into wasm (see [`Transaction::text`] and [`IdbTx::expand`]).
    held: RefCell<HashMap<u64, JsValue>>,
    /// The records added, as JavaScript objects (see [`IdbTx::added_events`]).
    added: Array,
    db: Rc<Database>,
    /// The unfolded records this transaction sees, once looked up.
    pending: RefCell<Option<Rc<Pending>>>,
    /// Unfolded records this transaction folded (by a `put`).
    folded: RefCell<HashSet<u64>>,
    /// Unfolded records this transaction added: known to the connection
    /// (without a read) once committed.
    appended: RefCell<Vec<Unfolded>>,
    /// Their sealed events texts (an encrypted store), in the same order.
    appended_sealed: RefCell<Vec<Vec<String>>>,
    /// Aggregates whose payloads this transaction erased (see `Transaction::forgot`).
    forgot: RefCell<std::collections::BTreeSet<String>>,
    /// This write moves the shred fence on (see [`IdbTx::bump_fence`]).
    fence_bump: Cell<bool>,
    /// The keyring's fence when this write first sealed (an encrypted
    /// store): the value the shred fence must still hold when it commits.
    sealed_at: Cell<Option<f64>>,
    /// The key slots this write sealed under: those whose bind the vault
    /// has not confirmed are recorded with it (see [`IdbTx::record_binds`]).
    sealed_under: RefCell<BTreeSet<u32>>,
    /// An encrypted store's write: the shred fence, read as its first request.
    fence_read: RefCell<Option<super::request::Request>>,
    /// A read transaction's forward page read ahead (see [`IdbTx::read_ahead`]).
    ahead: RefCell<Option<Ahead>>,
    /// Where the page that would continue the last full forward page read
    /// starts and ends, and that page's count: `(from, to, count)`.
    follows: Cell<Option<(u64, u64, u32)>>,
}

/// A forward page requested before it was asked for: `count` records
/// from key `from` up to key `to`.
struct Ahead {
    from: u64,
    to: u64,
    count: u32,
    request: super::request::Request,
}

impl IdbTx {
    /// Makes this write (a shred's, after its rotation) move the shred
    /// fence on as it commits: writes of other connections that still
    /// seal under the slots it retired are undone from then on and done
    /// again under the new ones.
    pub fn bump_fence(&self) {
        self.fence_bump.set(true);
    }

    /// This write seals (an encrypted store): remembers the keyring's fence
    /// at its first seal (see [`IdbTx::check_fence`]).
    fn sealing_at(&self, sealer: &Sealer) {
        if self.sealed_at.get().is_none() {
            self.sealed_at.set(Some(sealer.fence()));
        }
    }

    /// An encrypted store's write sealed under reserved slots the vault
    /// has not bound yet: it records them (see `Sealer::pending_binds`).
    fn record_binds(&self) -> Result<()> {
        let Some(sealer) = self.db.sealer() else {
            return Ok(());
        };
        let Some((key, json)) = sealer.pending_binds(&self.sealed_under.take())? else {
            return Ok(());
        };
        self.current
            .borrow()
            .0
            .object_store(SYNC_STORE)
            .and_then(|store| store.put_with_key(&json.into(), &key.into()))
            .map(drop)
            .map_err(|e| storage_error(&e))
    }

    /// Every record of binds (`binds:<token>` entries of the `sync`
    /// object store): (key, JSON).
    pub async fn binds_entries(&self) -> Result<Vec<(String, String)>> {
        let store = self
            .current
            .borrow()
            .0
            .object_store(SYNC_STORE)
            .map_err(|e| storage_error(&e))?;
        binds_entries(&store).await
    }

    /// An encrypted store's check before a write commits: the fence is
    /// where this connection's keyring was valid, or the write is undone
    /// (`STORAGE`, after [`Sealer::fence_moved`], so that the caller's
    /// retry asks the vault for live slots again). A shred moves it on.
    async fn check_fence(&self) -> Result<()> {
        let Some(sealer) = self.db.sealer() else {
            return Ok(());
        };
        if self.sealed_at.get().is_none() && !self.fence_bump.get() {
            // Nothing sealed here: nothing to undo.
            return Ok(());
        }
        // Read first thing in the transaction (see `Database::writer`), so
        // that it succeeds before a later request can fail and abort it
        // (a guessed push's `start`), whose own error then stays the one
        // reported.
        let Some(read) = self.fence_read.take() else {
            return Ok(());
        };
        let now = read
            .await
            .map_err(|e| storage_error(&e))?
            .as_f64()
            .unwrap_or(0.0);
        let store = self
            .current
            .borrow()
            .0
            .object_store(SYNC_STORE)
            .map_err(|e| storage_error(&e))?;
        // The fence as the keyring had it when this write first sealed:
        // a reload since (another operation's) does not vouch for the
        // slots it sealed under.
        if now != self.sealed_at.get().unwrap_or_else(|| sealer.fence()) {
            sealer.fence_moved(now);
            let _ = self.current.borrow().0.abort();
            return Err(Error::Storage(
                "encryption: a forget elsewhere gave this store's aggregates new keys while this write sealed under the old ones; it was undone, and not done again".into(),
            ));
        }
        if self.fence_bump.get() {
            store
                .put_with_key(&(now + 1.0).into(), &FENCE_KEY.into())
                .map_err(|e| storage_error(&e))?;
        }
        Ok(())
    }

    /// The public events of a page of [`crate::engine::filter`], as a JS
    /// array: whole batches are expanded in JavaScript straight from their
    /// records, without their text ever crossing into wasm (their events
    /// backwards for a `reverse` read).
    pub fn expand(&self, page: Vec<Segment>, reverse: bool) -> Result<Array> {
        let sealer = self.db.sealer();
        let parts = Array::new();
        for segment in page {
            match segment {
                Segment::Events(json) => {
                    parts.push(&JsValue::from_str(&json));
                }
                Segment::Whole(batch) => {
                    // Every batch of a page was read in this transaction;
                    // one of an unfolded record has its text in wasm.
                    let record = self.held.borrow_mut().remove(&batch.last_position);
                    // A record read whole goes to JavaScript as it is,
                    // unless it is sealed; then, as the batches in wasm,
                    // its (opened) text and the batch's fields.
                    let text = match (record, &sealer) {
                        (Some(record), None) => {
                            parts.push(&record);
                            continue;
                        }
                        (Some(record), Some(sealer)) => {
                            Cow::Owned(sealer.unseal(&self.text_of(&record, batch.last_position)?)?)
                        }
                        (None, _) => Cow::Borrowed(&batch.events),
                    };
                    parts.push(&whole_part(
                        batch.last_position as f64,
                        batch.first_sequence as f64,
                        batch.last_sequence as f64,
                        batch.created_at as f64,
                        &batch.aggregate,
                        &text,
                    ));
                }
            };
        }
        expand_page(&parts, reverse).map_err(|e| storage_error(&e))
    }

    /// The `events` text of a record read from the store.
    fn text_of(&self, record: &JsValue, key: u64) -> Result<String> {
        get(record, "events")
            .as_string()
            .ok_or_else(|| Error::Storage(format!("corrupt record {key}: events is not a string")))
    }

    /// Reads an array of records, holding their events text back; unfolded
    /// records are left out (their batches come from [`IdbTx::pending`]).
    fn batches(&self, all: &JsValue) -> Result<Vec<Batch>> {
        Ok(self.page(all)?.0)
    }

    /// [`IdbTx::batches`], with how many records were read and the key of
    /// the last one.
    fn page(&self, all: &JsValue) -> Result<(Vec<Batch>, usize, Option<u64>)> {
        let records = Array::from(all);
        READ.with(|r| r.set(r.get() + u64::from(records.length())));
        let meta = records_meta(&records);
        let numbers = js_sys::Float64Array::from(meta.get(0)).to_vec();
        let texts = Array::from(&meta.get(1));
        let corrupt = || Error::Storage("corrupt record: a field has the wrong type".into());
        let int = |n: f64| {
            (n >= 0.0 && n.fract() == 0.0)
                .then_some(n as u64)
                .ok_or_else(corrupt)
        };
        let mut held = self.held.borrow_mut();
        let mut batches = Vec::with_capacity(records.length() as usize);
        let mut last_key = None;
        for (i, n) in numbers.chunks_exact(6).enumerate() {
            last_key = Some(int(n[0])?);
            if n[5] == 1.0 {
                continue;
            }
            let mut text = Array::from(&texts.get(i as u32))
                .iter()
                .map(|t| t.as_string().ok_or_else(corrupt))
                .collect::<Result<Vec<String>>>()?
                .into_iter();
            let batch = Batch {
                last_position: int(n[0])?,
                aggregate: text.next().ok_or_else(corrupt)?,
                first_sequence: int(n[1])?,
                last_sequence: int(n[2])?,
                created_at: int(n[3])?,
                actions: text.collect(),
                events: String::new(),
                starts_push: n[4] == 1.0,
            }
            .check()?;
            // Held in JavaScript; in an encrypted store its text is opened
            // only when used (`text`, `expand`): records a filter skips by
            // their clear ids and actions (`text_contains`) are never decrypted.
            held.insert(batch.last_position, records.get(i as u32));
            batches.push(batch);
        }
        Ok((batches, records.length() as usize, last_key))
    }

    /// The records with keys in `from..=to`, at most `limit` (the last
    /// ones when `reverse`): their batches (unfolded records left out), how
    /// many records were read and the key of the last one.
    async fn scan_store(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        reverse: bool,
    ) -> Result<(Vec<Batch>, usize, Option<u64>)> {
        let r = range(
            &JsValue::from_f64(from as f64),
            &JsValue::from_f64(to as f64),
            false,
        )?;
        let count = clamp(limit);
        let all = if reverse {
            let request = self.request(&|store| open_backwards(store, &r, count))?;
            CursorValues::new(request, count)
                .await
                .map_err(|e| storage_error(&e))?
                .into()
        } else {
            // A page read ahead holds the first records of any smaller
            // page from the same key.
            let (request, ahead_count) = match self.ahead.take() {
                Some(a) if (a.from, a.to) == (from, to) && count <= a.count => (a.request, a.count),
                _ => (
                    super::request::Request::new(
                        self.request(&|store| store.get_all_with_key_and_limit(&r, count))?,
                    ),
                    count,
                ),
            };
            let mut all = request.await.map_err(|e| storage_error(&e))?;
            if ahead_count > count {
                all = all.unchecked_ref::<Array>().slice(0, count).into();
            }
            let page = self.page(&all)?;
            self.read_ahead(from, to, count, page.1, page.2)?;
            return Ok(page);
        };
        self.page(&all)
    }

    /// A long forward read (from the second full page in a row of one
    /// range) requests its next page, as many records as this one, once
    /// this one's keys are known and before its events are decoded, so
    /// that IndexedDB reads it meanwhile: a read
    /// of `user.*.added` over 10,000 one-event records waited for
    /// IndexedDB about 40 % of its time, page after page. The next call
    /// takes it if it asks for at most as many records from the same key
    /// (a `limit` ending inside it takes its first ones). Only in read
    /// transactions (a write's next page must see the writes made for
    /// this one), and only for continuations no smaller than the page
    /// before (a smaller one is a `limit`'s last), so that short reads and
    /// reads of ranges between unfolded records request nothing unused; a
    /// read that stops at a page's end wastes the page after it.
    fn read_ahead(
        &self,
        from: u64,
        to: u64,
        count: u32,
        read: usize,
        last: Option<u64>,
    ) -> Result<()> {
        if self.done.is_some() {
            return Ok(());
        }
        // A smaller page than the last one is a limit's last: nothing after it.
        let continued = self
            .follows
            .take()
            .is_some_and(|f| (f.0, f.1) == (from, to) && count >= f.2);
        // Only a full page that ended before `to` has a page after it.
        let Some(last) = last.filter(|l| read >= count as usize && count > 0 && *l < to) else {
            return Ok(());
        };
        self.follows.set(Some((last + 1, to, count)));
        if continued {
            let r = range(
                &JsValue::from_f64((last + 1) as f64),
                &JsValue::from_f64(to as f64),
                false,
            )?;
            let request = self.request(&|store| store.get_all_with_key_and_limit(&r, count))?;
            AHEAD.with(|a| a.set(a.get() + 1));
            self.ahead.replace(Some(Ahead {
                from: last + 1,
                to,
                count,
                request: super::request::Request::new(request),
            }));
        }
        Ok(())
    }

    /// A scan of `from..=to` (see [`Transaction::scan`]) merged with the
    /// unfolded batches. Once this transaction knows the unfolded records,
    /// the store is read only where they are not (see
    /// [`Pending::store_range`]); the first scan reads both at once.
    async fn scan_merged(
        &self,
        from: u64,
        to: u64,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Batch>> {
        if from > to {
            return Ok(Vec::new());
        }
        let mut known = self.pending.borrow().clone();
        // When this connection last saw unfolded records, they are likely
        // still there: learn them first (one `getAllKeys`), so that the
        // store is read only between them. Read at once with the store, a
        // page would read the unfolded records in its range as well (up to
        // `limit` records of a whole push each), only to drop them.
        let unfolded_seen = self
            .db
            .last_pending
            .borrow()
            .as_ref()
            .is_some_and(|(_, p)| !p.is_empty());
        if known.is_none() && unfolded_seen {
            known = Some(self.pending().await?);
        }
        if let Some(pending) = known {
            return crate::log::scan(&pending, (from, to), limit, reverse, |a, b, want| {
                self.scan_store(a, b, want, reverse)
            })
            .await;
        }
        let (page, pending) =
            futures::join!(self.scan_store(from, to, limit, reverse), self.pending());
        let (stored, read, last) = page?;
        let reached = last.filter(|_| read >= limit);
        Ok(pending?.merge(stored, reached, (from, to), limit, reverse))
    }

    /// The unfolded records this transaction sees: the keys in the
    /// `unfolded` index, each decoded once per connection (unfolded
    /// records never change).
    async fn pending(&self) -> Result<Rc<Pending>> {
        if let Some(p) = self.pending.borrow().as_ref() {
            return Ok(p.clone());
        }
        // A reused read transaction (see `Database::read`) shares the last
        // one's view, once a request has shown it is still that one.
        let retry = self.retry.take();
        let settled = retry.is_none();
        self.retry.set(retry);
        let known = self.db.last_pending.borrow().as_ref().and_then(|(tx, p)| {
            (settled && self.done.is_none() && *tx == self.current.borrow().0).then(|| p.clone())
        });
        if let Some(p) = known {
            self.pending.replace(Some(p.clone()));
            return Ok(p);
        }
        let keys = self
            .call(&|store| store.index(BY_UNFOLDED)?.get_all_keys())
            .await?;
        let keys: Vec<u64> = Array::from(&keys).iter().map(|k| number(&k)).collect();
        // The same records as the last view built: the same view.
        let same = self
            .db
            .last_pending
            .borrow()
            .as_ref()
            .and_then(|(_, p)| p.keys().eq(keys.iter().copied()).then(|| p.clone()));
        if let Some(p) = same {
            if self.done.is_none() {
                self.db
                    .last_pending
                    .replace(Some((self.current.borrow().0.clone(), p.clone())));
            }
            self.pending.replace(Some(p.clone()));
            return Ok(p);
        }
        self.decode_unfolded(&keys).await?;
        let pending = {
            let mut cache = self.db.unfolded.borrow_mut();
            let wanted: HashSet<u64> = keys.iter().copied().collect();
            // Records folded since are of no use any more.
            cache.retain(|k, _| wanted.contains(k));
            self.db
                .unfolded_sealed
                .borrow_mut()
                .retain(|k, _| wanted.contains(k));
            // Usually the last view with a few records folded or pushed
            // since: moved on, not rebuilt (a long read while the fold runs
            // sees a new set at every page).
            let last = self
                .db
                .last_pending
                .borrow()
                .as_ref()
                .map(|(_, p)| p.clone());
            Rc::new(match last {
                Some(last) => last.updated(&keys, |k| cache.get(&k).cloned()),
                None => Pending::new(keys.iter().filter_map(|k| cache.get(k).cloned())),
            })
        };
        if self.done.is_none() {
            self.db
                .last_pending
                .replace(Some((self.current.borrow().0.clone(), pending.clone())));
        }
        self.pending.replace(Some(pending.clone()));
        Ok(pending)
    }

    /// Reads and decodes the unfolded records of `keys` the connection has
    /// not decoded yet, into its cache (see [`Database::unfolded`]).
    async fn decode_unfolded(&self, keys: &[u64]) -> Result<()> {
        let missing: Vec<u64> = {
            let cache = self.db.unfolded.borrow();
            keys.iter()
                .copied()
                .filter(|k| !cache.contains_key(k))
                .collect()
        };
        let requests = missing
            .iter()
            .map(|k| self.request(&|store| store.get(&JsValue::from_f64(*k as f64))))
            .collect::<Result<Vec<_>>>()?;
        for (key, request) in missing.iter().zip(requests) {
            let record = wait(&request).await.map_err(|e| storage_error(&e))?;
            READ.with(|r| r.set(r.get() + 1));
            let start = get(&record, "start").as_f64().map(|s| s as u64);
            let created_at = number(&get(&record, "createdAt"));
            let text = get(&record, "batches").as_string().ok_or_else(|| {
                Error::Storage(format!("corrupt unfolded record {key}: no batches"))
            })?;
            let mut decoded = Unfolded::decode(*key, start, created_at, &text)?;
            if let Some(sealer) = self.db.sealer() {
                let mut sealed = Vec::with_capacity(decoded.batches.len());
                for b in &mut decoded.batches {
                    let open = sealer.unseal(&b.events)?;
                    sealed.push(std::mem::replace(&mut b.events, open));
                }
                self.db
                    .unfolded_sealed
                    .borrow_mut()
                    .insert(*key, Rc::new(sealed));
            }
            self.db
                .unfolded
                .borrow_mut()
                .insert(*key, Arc::new(decoded));
        }
        Ok(())
    }

    /// Folds the unfolded record `key` (a `put` of some of its batches):
    /// deletes it and adds its batches, those of `replaced` instead of its own.
    fn fold_record(
        &self,
        pending: &Pending,
        key: u64,
        replaced: &HashMap<u64, &Batch>,
    ) -> Result<()> {
        let Some(record) = pending.records().find(|r| r.key == key) else {
            return Ok(());
        };
        self.folded.borrow_mut().insert(key);
        let store = self.current.borrow().1.clone();
        store
            .delete(&JsValue::from_f64(key as f64))
            .map_err(|e| storage_error(&e))?;
        let batches: Vec<Batch> = record
            .batches
            .iter()
            .map(|b| (*replaced.get(&b.last_position).unwrap_or(&b)).clone())
            .collect();
        self.write_records(&batches, false, false)
    }

    /// Issues a request on the transaction's store (see [`Database::read`]
    /// for why a first request may move to a new transaction).
    fn request(
        &self,
        make: &dyn Fn(&IdbObjectStore) -> std::result::Result<IdbRequest, JsValue>,
    ) -> Result<IdbRequest> {
        let result = make(&self.current.borrow().1);
        // Only the first request may move: later ones belong to the snapshot
        // the first one reads.
        let retry = self.retry.take();
        match (result, retry) {
            (Ok(request), _) => Ok(request),
            // Inactive: between its tasks; InvalidStateError: finished.
            (Err(e), Some(db))
                if matches!(
                    exception_name(&e).as_deref(),
                    Some("TransactionInactiveError" | "InvalidStateError")
                ) =>
            {
                let fresh = db.fresh_read()?;
                let request = make(&fresh.1).map_err(|e| storage_error(&e));
                self.current.replace(fresh);
                request
            }
            (Err(e), _) => Err(storage_error(&e)),
        }
    }

    /// Adds (or with `replace`, puts) the records of `batches`: one call
    /// into JavaScript for all of them, as one JSON text.
    fn write_records(&self, batches: &[Batch], replace: bool, published: bool) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let added = published.then_some(&self.added);
        let (json, plain) = match self.db.sealer() {
            Some(sealer) => {
                self.sealing_at(&sealer);
                let sealed = sealed(&sealer, batches, &mut self.sealed_under.borrow_mut())?;
                let plain = match published {
                    true => Some(crate::batch::records_json(batches)?),
                    false => None,
                };
                (crate::batch::records_json(&sealed)?, plain)
            }
            None => (crate::batch::records_json(batches)?, None),
        };
        write_records(&self.current.borrow().1, &json, replace, added, plain)
            .map_err(|e| storage_error(&e))
    }

    /// The public events of the records added in this transaction, made in
    /// JavaScript from the records themselves, as a read would make them.
    pub fn added_events(&self) -> Result<Array> {
        expand_page(&self.added, false).map_err(|e| storage_error(&e))
    }

    /// Issues a request and waits for it; a failed request means the
    /// transaction aborts, so its error is the transaction's error.
    async fn call(
        &self,
        make: &dyn Fn(&IdbObjectStore) -> std::result::Result<IdbRequest, JsValue>,
    ) -> Result<JsValue> {
        let request = self.request(make)?;
        wait(&request).await.map_err(|e| storage_error(&e))
    }
}

fn range(lower: &JsValue, upper: &JsValue, upper_open: bool) -> Result<IdbKeyRange> {
    IdbKeyRange::bound_with_lower_open_and_upper_open(lower, upper, false, upper_open)
        .map_err(|e| storage_error(&e))
}

/// The `actions` index range of a subject range.
fn action_range(key: &KeyRange) -> Result<IdbKeyRange> {
    match key {
        KeyRange::Exact(a) => {
            IdbKeyRange::only(&JsValue::from_str(a)).map_err(|e| storage_error(&e))
        }
        KeyRange::Prefix(_) => {
            let (lo, hi) = key.bounds();
            range(&lo.into(), &hi.into(), true)
        }
    }
}

/// The `aggregate` index range of an aggregate range.
fn aggregate_range(key: &KeyRange) -> Result<IdbKeyRange> {
    match key {
        KeyRange::Exact(a) => sequences(a, 0.0),
        KeyRange::Prefix(_) => {
            let (lo, hi) = key.bounds();
            range(
                &Array::of1(&lo.into()).into(),
                &Array::of1(&hi.into()).into(),
                true,
            )
        }
    }
}

/// The `aggregate` index keys of `a` from sequence `from` to the last.
fn sequences(a: &str, from: f64) -> Result<IdbKeyRange> {
    let a = JsValue::from_str(a);
    let lower = Array::of2(&a, &JsValue::from_f64(from));
    let upper = Array::of2(&a, &JsValue::from_f64(f64::INFINITY));
    range(&lower, &upper, false)
}

impl Transaction for IdbTx {
    async fn last_position(&self) -> Result<u64> {
        let cursor = self
            .call(&|store| {
                store.open_key_cursor_with_range_and_direction(
                    &JsValue::NULL,
                    IdbCursorDirection::Prev,
                )
            })
            .await?;
        match cursor.dyn_into::<IdbCursor>() {
            Ok(c) => c.key().map(|k| number(&k)).map_err(|e| storage_error(&e)),
            Err(_) => Ok(0),
        }
    }

    async fn heads(&self, aggregates: &[&str]) -> Result<Vec<u64>> {
        if aggregates.is_empty() {
            return Ok(Vec::new());
        }
        // Issue every lookup first, then wait: IndexedDB pipelines them.
        let pending = self.pending().await?;
        let mut requests = Vec::with_capacity(aggregates.len());
        for a in aggregates {
            let r = sequences(a, 0.0)?;
            requests.push(self.request(&|store| {
                store
                    .index(BY_AGGREGATE)?
                    .open_key_cursor_with_range_and_direction(&r, IdbCursorDirection::Prev)
            })?);
        }
        let mut heads = Vec::with_capacity(aggregates.len());
        for (request, a) in requests.into_iter().zip(aggregates) {
            let cursor = wait(&request).await.map_err(|e| storage_error(&e))?;
            heads.push(match cursor.dyn_into::<IdbCursor>() {
                Ok(c) => {
                    let key = c.key().map_err(|e| storage_error(&e))?;
                    number(&Array::from(&key).get(1))
                }
                Err(_) => 0,
            });
            if let Some(h) = heads.last_mut() {
                *h = (*h).max(pending.head(a));
            }
        }
        Ok(heads)
    }

    async fn scan(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>> {
        self.scan_merged(from, to, limit, false).await
    }

    async fn scan_back(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>> {
        self.scan_merged(from, to, limit, true).await
    }

    async fn by_created_at(&self, created_at: u64) -> Result<Vec<Batch>> {
        let key = JsValue::from_f64(created_at as f64);
        let make = |store: &IdbObjectStore| store.index(BY_CREATED)?.get_all_with_key(&key);
        let (all, pending) = futures::join!(self.call(&make), self.pending());
        let mut batches = self.batches(&all?)?;
        batches.extend(pending?.batches_where(|b| b.created_at == created_at));
        Ok(batches)
    }

    async fn by_aggregate(&self, aggregate: &str, from_sequence: u64) -> Result<Vec<Batch>> {
        let r = sequences(aggregate, from_sequence as f64)?;
        let make = |store: &IdbObjectStore| store.index(BY_AGGREGATE)?.get_all_with_key(&r);
        let (all, pending) = futures::join!(self.call(&make), self.pending());
        let mut batches = self.batches(&all?)?;
        batches.extend(pending?.by_aggregate(aggregate, from_sequence));
        Ok(batches)
    }

    async fn keys_by_aggregate(&self, key: &KeyRange) -> Result<Vec<u64>> {
        let r = aggregate_range(key)?;
        let make = |store: &IdbObjectStore| store.index(BY_AGGREGATE)?.get_all_keys_with_key(&r);
        let (keys, pending) = futures::join!(self.call(&make), self.pending());
        let mut keys: Vec<u64> = Array::from(&keys?).iter().map(|k| number(&k)).collect();
        keys.extend(pending?.keys_by_aggregate(key));
        Ok(keys)
    }

    async fn keys_by_action(&self, key: &KeyRange) -> Result<Vec<u64>> {
        let r = action_range(key)?;
        let make = |store: &IdbObjectStore| store.index(BY_ACTION)?.get_all_keys_with_key(&r);
        let (keys, pending) = futures::join!(self.call(&make), self.pending());
        let mut keys: Vec<u64> = Array::from(&keys?).iter().map(|k| number(&k)).collect();
        keys.extend(pending?.keys_by_action(key));
        Ok(keys)
    }

    async fn get(&self, keys: &[u64]) -> Result<Vec<Batch>> {
        // Candidate keys come from lookups that saw the unfolded records.
        let pending = self.pending().await?;
        let requests = keys
            .iter()
            .map(|k| match pending.get(*k) {
                Some(batch) => Ok(Err(batch)),
                None => self
                    .request(&|store| store.get(&JsValue::from_f64(*k as f64)))
                    .map(Ok),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut batches = Vec::with_capacity(keys.len());
        for request in requests {
            match request {
                Ok(request) => {
                    let record = wait(&request).await.map_err(|e| storage_error(&e))?;
                    batches.extend(self.batches(&Array::of1(&record))?);
                }
                Err(batch) => batches.push(batch),
            }
        }
        Ok(batches)
    }

    fn text<'a>(&self, batch: &'a Batch) -> Result<Cow<'a, str>> {
        let record = self.held.borrow_mut().remove(&batch.last_position);
        match record {
            Some(record) => {
                let text = self.text_of(&record, batch.last_position)?;
                match self.db.sealer() {
                    Some(sealer) => sealer.unseal(&text).map(Cow::Owned),
                    None => Ok(Cow::Owned(text)),
                }
            }
            None => Ok(Cow::Borrowed(&batch.events)),
        }
    }

    fn text_to_match<'a>(&self, batch: &'a Batch) -> Result<Cow<'a, str>> {
        // Sealed payloads stay sealed: only the events picked are opened.
        match self.held.borrow_mut().remove(&batch.last_position) {
            Some(record) => {
                if let Some(sealer) = self.db.sealer() {
                    sealer.matching();
                }
                self.text_of(&record, batch.last_position).map(Cow::Owned)
            }
            None => Ok(Cow::Borrowed(&batch.events)),
        }
    }

    fn open(&self, event: &StoredEvent<'_>) -> Result<Opened> {
        match self.db.sealer() {
            Some(sealer) if event.sealed.is_some() => sealer.open_event(event),
            _ => Ok(Opened::Clear),
        }
    }

    fn text_contains(&self, batch: &Batch, needle: &str) -> Result<bool> {
        // Looked for in JavaScript: the text is not copied into wasm.
        match self.held.borrow().get(&batch.last_position) {
            Some(record) => Ok(get(record, "events")
                .dyn_into::<js_sys::JsString>()
                .map(|t| t.includes(needle, 0))
                .unwrap_or(true)),
            // Not held: an unfolded record's batch, its text in wasm.
            None => Ok(batch.events.is_empty() || batch.events.contains(needle)),
        }
    }

    fn release(&self, batch: &Batch) {
        self.held.borrow_mut().remove(&batch.last_position);
    }

    fn forgot(&mut self, aggregate: &str) {
        if self.db.sealer().is_some() {
            self.forgot.borrow_mut().insert(aggregate.to_owned());
        }
    }

    async fn sync_state(&self) -> Result<Option<String>> {
        let value = self
            .call(&|store| {
                store
                    .transaction()
                    .object_store(SYNC_STORE)?
                    .get(&SYNC_KEY.into())
            })
            .await?;
        Ok(value.as_string())
    }

    fn put_sync_state(&mut self, json: &str) -> Result<()> {
        let tx = self.current.borrow().0.clone();
        tx.object_store(SYNC_STORE)
            .and_then(|s| s.put_with_key(&json.into(), &SYNC_KEY.into()))
            .map(drop)
            .map_err(|e| storage_error(&e))
    }

    fn delete(&mut self, keys: &[u64]) -> Result<()> {
        // A batch of an unfolded record: the record is folded first (as
        // `put` does), then the batch record deleted.
        let pending = self.pending.borrow().clone();
        if let Some(pending) = pending.filter(|p| !p.is_empty()) {
            for &key in keys {
                match pending.owner(key) {
                    Some(record) if !self.folded.borrow().contains(&record) => {
                        self.fold_record(&pending, record, &HashMap::new())?;
                    }
                    _ => {}
                }
            }
        }
        let store = self.current.borrow().1.clone();
        for key in keys {
            store
                .delete(&JsValue::from_f64(*key as f64))
                .map_err(|e| storage_error(&e))?;
        }
        Ok(())
    }

    fn add(&mut self, batches: &[Batch]) -> Result<()> {
        self.write_records(batches, false, true)
    }

    fn put(&mut self, batches: &[Batch]) -> Result<()> {
        // A batch of an unfolded record folds the record (so that no
        // record ever keeps a forgotten payload, and unfolded records
        // never change).
        let pending = self.pending.borrow().clone();
        let Some(pending) = pending.filter(|p| !p.is_empty()) else {
            return self.write_records(batches, true, false);
        };
        let replaced: HashMap<u64, &Batch> = batches.iter().map(|b| (b.last_position, b)).collect();
        let mut stored = Vec::new();
        for b in batches {
            match pending.owner(b.last_position) {
                Some(record) if !self.folded.borrow().contains(&record) => {
                    self.fold_record(&pending, record, &replaced)?;
                }
                _ => stored.push(b.clone()),
            }
        }
        self.write_records(&stored, true, false)
    }

    fn append(&mut self, batches: &[Batch]) -> Result<()> {
        let sealer = self.db.sealer();
        let (records, plain) = match &sealer {
            // Encrypted: records are cut by their sealed size; the
            // connection keeps (and the push returns) the plaintext ones.
            Some(sealer) => {
                self.sealing_at(sealer);
                let sealed_records = Unfolded::chunk(&sealed(
                    sealer,
                    batches,
                    &mut self.sealed_under.borrow_mut(),
                )?);
                // The sealed batches are the plain ones in the same order,
                // cut into the same records.
                let mut plain_batches = batches.iter();
                let plain: Vec<Unfolded> = sealed_records
                    .iter()
                    .map(|r| Unfolded {
                        key: r.key,
                        start: r.start,
                        created_at: r.created_at,
                        batches: plain_batches
                            .by_ref()
                            .take(r.batches.len())
                            .cloned()
                            .collect(),
                    })
                    .collect();
                (sealed_records, Some(plain))
            }
            None => (Unfolded::chunk(batches), None),
        };
        let plain_texts = match &plain {
            Some(p) => Some(
                p.iter()
                    .map(|r| r.text().map(|t| JsValue::from_str(&t)))
                    .collect::<Result<Array>>()?,
            ),
            None => None,
        };
        let mut numbers = Vec::with_capacity(records.len() * 3);
        let texts = Array::new();
        for r in &records {
            numbers.extend([
                r.key as f64,
                r.start.unwrap_or(0) as f64,
                r.created_at as f64,
            ]);
            texts.push(&JsValue::from_str(&r.text()?));
        }
        write_unfolded(
            &self.current.borrow().1,
            &numbers,
            &texts,
            Some(&self.added),
            plain_texts,
        )
        .map_err(|e| storage_error(&e))?;
        if plain.is_some() {
            self.appended_sealed.borrow_mut().extend(
                records
                    .iter()
                    .map(|r| r.batches.iter().map(|b| b.events.clone()).collect()),
            );
        }
        self.appended.borrow_mut().extend(plain.unwrap_or(records));
        Ok(())
    }

    async fn fold(&mut self, budget: usize) -> Result<usize> {
        // Records hold one push each (often dozens of batches): a few
        // are enough for a budget. Their keys are read here; the records
        // themselves come from the connection's cache (its own pushes,
        // or decoded by a read) or are read and decoded now, so that their
        // events are carried verbatim, as text.
        let count = clamp(budget.div_ceil(16).max(1));
        let keys = self
            .call(&|store| {
                store
                    .index(BY_UNFOLDED)?
                    .get_all_keys_with_key_and_limit(&JsValue::UNDEFINED, count)
            })
            .await?;
        let keys: Vec<u64> = Array::from(&keys).iter().map(|k| number(&k)).collect();
        self.decode_unfolded(&keys).await?;
        let records: Vec<Arc<Unfolded>> = {
            let cache = self.db.unfolded.borrow();
            keys.iter().filter_map(|k| cache.get(k).cloned()).collect()
        };
        let store = self.current.borrow().1.clone();
        let mut batches = Vec::new();
        // Encrypted: batches whose sealed text is known are written as
        // they are (the fold changes no event), the others sealed again.
        let mut sealed = Vec::new();
        let mut folded = 0;
        for record in &records {
            if folded > 0 && batches.len() + sealed.len() >= budget {
                break;
            }
            store
                .delete(&JsValue::from_f64(record.key as f64))
                .map_err(|e| storage_error(&e))?;
            let texts = self.db.unfolded_sealed.borrow().get(&record.key).cloned();
            match texts.filter(|t| t.len() == record.batches.len()) {
                Some(texts) => sealed.extend(
                    record
                        .batches
                        .iter()
                        .zip(texts.iter())
                        .map(|(b, t)| b.with_events(t.clone())),
                ),
                None => batches.extend(record.batches.iter().cloned()),
            }
            folded += 1;
        }
        self.write_records(&batches, false, false)?;
        if !sealed.is_empty() {
            let json = crate::batch::records_json(&sealed)?;
            write_records(&store, &json, false, None, None).map_err(|e| storage_error(&e))?;
        }
        Ok(folded)
    }

    async fn commit(mut self) -> Result<()> {
        let forgot = self.forgot.take();
        if !forgot.is_empty() {
            // The aggregates whose keys to shred, with the forget (see
            // `super::shred`): a tab closed before the shred ends leaves
            // them for the next open.
            let store = self
                .current
                .borrow()
                .0
                .object_store(SYNC_STORE)
                .map_err(|e| storage_error(&e))?;
            let before = self
                .call(&|_| store.get(&SHRED_KEY.into()))
                .await?
                .as_string();
            let text = crate::seal::shred_list(before.as_deref(), &forgot)?;
            store
                .put_with_key(&text.into(), &SHRED_KEY.into())
                .map_err(|e| storage_error(&e))?;
        }
        self.record_binds()?;
        self.check_fence().await?;
        let tx = self.current.borrow().0.clone();
        let done = self.done.take();
        super::request::commit_early(&tx);
        let Some(done) = done else {
            return Ok(());
        };
        match done.await {
            Ok(()) => {
                if let (Some(sealer), true) = (self.db.sealer(), self.fence_bump.get()) {
                    sealer.set_fence(sealer.fence() + 1.0);
                }
                // Committed: these keys hold these records until folded.
                // (Up to a bound: a long import that outruns the fold is
                // decoded again by the reads that need it, if any.)
                let mut cache = self.db.unfolded.borrow_mut();
                let mut sealed = self.appended_sealed.take().into_iter();
                let mut sealed_cache = self.db.unfolded_sealed.borrow_mut();
                for r in self.appended.take() {
                    let texts = sealed.next();
                    if cache.len() < CACHED_APPENDS {
                        if let Some(texts) = texts {
                            sealed_cache.insert(r.key, Rc::new(texts));
                        }
                        cache.insert(r.key, Arc::new(r));
                    }
                }
                Ok(())
            }
            // No request failed and the transaction has no error: WebKit
            // aborts so when SQLite cannot commit for lack of disk space
            // (seen on a full disk, tests/webdriver/diskfull.test.mjs).
            Err(cause) if cause.is_null() || cause.is_undefined() => Err(Error::QuotaExceeded(
                "the browser aborted the write without giving a reason, as WebKit does when the disk is full".into(),
            )),
            Err(cause) => Err(storage_error(&cause)),
        }
    }
}

impl Drop for IdbTx {
    /// A write transaction dropped without `commit` (an error on the way)
    /// is aborted, so that nothing it wrote is kept.
    fn drop(&mut self) {
        if self.done.is_some() {
            let _ = self.current.borrow().0.abort();
        }
    }
}

/// A count for IndexedDB (`u32`).
fn clamp(limit: usize) -> u32 {
    u32::try_from(limit).unwrap_or(u32::MAX)
}

fn number(v: &JsValue) -> u64 {
    v.as_f64().unwrap_or(0.0) as u64
}

fn get(obj: &JsValue, key: &'static str) -> JsValue {
    Reflect::get(obj, &super::interop::key(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Every `binds:<token>` entry of the `sync` object store `store`: (key, JSON).
async fn binds_entries(store: &IdbObjectStore) -> Result<Vec<(String, String)>> {
    // Keys past the prefix: "binds:" up to "binds;" (the next character).
    let range = IdbKeyRange::bound(&BINDS_PREFIX.into(), &"binds;".into())
        .map_err(|e| storage_error(&e))?;
    let keys = store
        .get_all_keys_with_key(&range)
        .map_err(|e| storage_error(&e))?;
    let values = store
        .get_all_with_key(&range)
        .map_err(|e| storage_error(&e))?;
    let keys = wait(&keys).await.map_err(|e| storage_error(&e))?;
    let values = wait(&values).await.map_err(|e| storage_error(&e))?;
    Ok(Array::from(&keys)
        .iter()
        .zip(Array::from(&values).iter())
        .filter_map(|(k, v)| Some((k.as_string()?, v.as_string()?)))
        .collect())
}

/// Copies of `batches` with their payloads sealed (an encrypted store);
/// the slots sealed under are added to `used`.
fn sealed(sealer: &Sealer, batches: &[Batch], used: &mut BTreeSet<u32>) -> Result<Vec<Batch>> {
    batches
        .iter()
        .map(|b| Ok(b.with_events(sealer.seal(&b.aggregate, &b.events, used)?)))
        .collect()
}
