//! The IndexedDB backend (schema in `docs/storage.md`), on web-sys: rexie
//! cannot hook `versionchange`, and QUOTA_EXCEEDED needs the DOMException
//! name of an aborted transaction, so this small module talks to
//! IndexedDB directly through promise-wrapped requests.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{
    DomException, IdbCursor, IdbCursorDirection, IdbDatabase, IdbFactory, IdbIndexParameters,
    IdbKeyRange, IdbObjectStore, IdbObjectStoreParameters, IdbOpenDbRequest, IdbRequest,
    IdbTransaction, IdbTransactionMode, IdbVersionChangeEvent,
};

use super::request::{self, open_backwards, Completion, CursorValues, Request};
use crate::batch::{Batch, Segment};
use crate::error::{Error, Result};
use crate::storage::{Storage, Transaction};
use crate::subject::KeyRange;

/// The IndexedDB version this library writes. A database at a higher
/// version was written by a newer, incompatible release.
pub const SCHEMA_VERSION: u32 = 4;
/// The object store holding the batches.
pub const STORE: &str = "batches";
/// The object store holding the sync state (since version 4), one record
/// under the key [`SYNC_KEY`].
pub const SYNC_STORE: &str = "sync";
const SYNC_KEY: &str = "state";
/// Index on `[aggregate, lastSequence]`, unique.
pub const BY_AGGREGATE: &str = "aggregate";
/// Unique index on `start`, the first position of a push (on its first
/// record only): two pushes can never start at the same position.
pub const BY_START: &str = "start";
/// Index on `createdAt` (since version 3): the records of one millisecond,
/// where `get` finds an event by its UUIDv7 id.
pub const BY_CREATED: &str = "createdAt";
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
    const events = JSON.parse(part.events);
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
  const numbers = new Float64Array(records.length * 5);
  const texts = new Array(records.length);
  records.forEach((r, i) => {
    numbers.set([r.lastPosition, r.firstSequence, r.lastSequence, r.createdAt, r.start === undefined ? 0 : 1], i * 5);
    texts[i] = [r.aggregate, ...(Array.isArray(r.actions) ? r.actions : [])];
  });
  return [numbers, texts];
}
export function writeRecords(store, json, replace, added) {
  for (const record of JSON.parse(json)) {
    if (replace) store.put(record); else store.add(record);
    added?.push(record);
  }
}
"#)]
extern "C" {
    /// The public events of a page: JSON arrays (strings) and whole batch
    /// records (their events backwards when `reverse`), in order, as one array.
    #[wasm_bindgen(js_name = expandPage, catch)]
    fn expand_page(parts: &Array, reverse: bool) -> std::result::Result<Array, JsValue>;
    /// Every field of the records but their events: `[numbers, texts]`,
    /// five numbers per record (`lastPosition`, `firstSequence`,
    /// `lastSequence`, `createdAt`, 1 if it has `start`) and per record
    /// `[aggregate, ...actions]`.
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
    ) -> std::result::Result<(), JsValue>;
}

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
}

/// How many batch records this thread has read so far (for tests).
pub fn records_read() -> u64 {
    READ.with(Cell::get)
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
                    found: current_version(&factory, name).await,
                    supported: SCHEMA_VERSION,
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
    pub fn check_open(&self) -> Result<()> {
        match self.closed.borrow().as_ref() {
            Some(why) => Err(Error::Closed(why.clone())),
            None => Ok(()),
        }
    }

    /// A read-write transaction created now (its place in IndexedDB's
    /// order is fixed here), awaited to its end by `commit`.
    fn write(&self) -> Result<IdbTx> {
        let (tx, store) = self.create(IdbTransactionMode::Readwrite)?;
        let done = Some(Completion::new(&tx));
        Ok(IdbTx {
            current: RefCell::new((tx, store)),
            done,
            retry: Cell::new(None),
            held: RefCell::default(),
            added: Array::new(),
        })
    }

    fn create(&self, mode: IdbTransactionMode) -> Result<(IdbTransaction, IdbObjectStore)> {
        self.check_open()?;
        if mode == IdbTransactionMode::Readwrite {
            WRITES.with(|w| w.set(w.get() + 1));
        }
        CREATED.with(|c| c.set(c.get() + 1));
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
}

impl IdbTx {
    /// The public events of a page of [`crate::engine::filter`], as a JS
    /// array: whole batches are expanded in JavaScript straight from their
    /// records, without their text ever crossing into wasm (their events
    /// backwards for a `reverse` read).
    pub fn expand(&self, page: Vec<Segment>, reverse: bool) -> Result<Array> {
        let parts = Array::new();
        for segment in page {
            match segment {
                Segment::Events(json) => parts.push(&JsValue::from_str(&json)),
                Segment::Whole(batch) => {
                    // Every batch of a page was read in this transaction.
                    let record = self.held.borrow_mut().remove(&batch.last_position);
                    parts.push(&record.ok_or_else(|| {
                        Error::Storage(format!("batch {} was not read", batch.last_position))
                    })?)
                }
            };
        }
        expand_page(&parts, reverse).map_err(|e| storage_error(&e))
    }

    /// Reads an array of batch records, holding their events text back.
    fn batches(&self, all: &JsValue) -> Result<Vec<Batch>> {
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
        for (i, n) in numbers.chunks_exact(5).enumerate() {
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
            held.insert(batch.last_position, records.get(i as u32));
            batches.push(batch);
        }
        Ok(batches)
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
    fn write_records(&self, batches: &[Batch], replace: bool) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let json = crate::batch::records_json(batches)?;
        let added = (!replace).then_some(&self.added);
        write_records(&self.current.borrow().1, &json, replace, added)
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
        for request in requests {
            let cursor = wait(&request).await.map_err(|e| storage_error(&e))?;
            heads.push(match cursor.dyn_into::<IdbCursor>() {
                Ok(c) => {
                    let key = c.key().map_err(|e| storage_error(&e))?;
                    number(&Array::from(&key).get(1))
                }
                Err(_) => 0,
            });
        }
        Ok(heads)
    }

    async fn scan(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>> {
        if from > to {
            return Ok(Vec::new());
        }
        let r = range(
            &JsValue::from_f64(from as f64),
            &JsValue::from_f64(to as f64),
            false,
        )?;
        let all = self
            .call(&|store| store.get_all_with_key_and_limit(&r, limit as u32))
            .await?;
        self.batches(&all)
    }

    async fn scan_back(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Batch>> {
        if from > to {
            return Ok(Vec::new());
        }
        let r = range(
            &JsValue::from_f64(from as f64),
            &JsValue::from_f64(to as f64),
            false,
        )?;
        let limit = clamp(limit);
        let request = self.request(&|store| open_backwards(store, &r, limit))?;
        let all = CursorValues::new(request, limit)
            .await
            .map_err(|e| storage_error(&e))?;
        self.batches(&all)
    }

    async fn by_created_at(&self, created_at: u64) -> Result<Vec<Batch>> {
        let key = JsValue::from_f64(created_at as f64);
        let all = self
            .call(&|store| store.index(BY_CREATED)?.get_all_with_key(&key))
            .await?;
        self.batches(&all)
    }

    async fn by_aggregate(&self, aggregate: &str, from_sequence: u64) -> Result<Vec<Batch>> {
        let r = sequences(aggregate, from_sequence as f64)?;
        let all = self
            .call(&|store| store.index(BY_AGGREGATE)?.get_all_with_key(&r))
            .await?;
        self.batches(&all)
    }

    async fn keys_by_aggregate(&self, key: &KeyRange) -> Result<Vec<u64>> {
        let r = aggregate_range(key)?;
        let keys = self
            .call(&|store| store.index(BY_AGGREGATE)?.get_all_keys_with_key(&r))
            .await?;
        Ok(Array::from(&keys).iter().map(|k| number(&k)).collect())
    }

    async fn keys_by_action(&self, key: &KeyRange) -> Result<Vec<u64>> {
        let r = action_range(key)?;
        let keys = self
            .call(&|store| store.index(BY_ACTION)?.get_all_keys_with_key(&r))
            .await?;
        Ok(Array::from(&keys).iter().map(|k| number(&k)).collect())
    }

    async fn get(&self, keys: &[u64]) -> Result<Vec<Batch>> {
        let requests = keys
            .iter()
            .map(|k| self.request(&|store| store.get(&JsValue::from_f64(*k as f64))))
            .collect::<Result<Vec<_>>>()?;
        let mut batches = Vec::with_capacity(keys.len());
        for request in requests {
            let record = wait(&request).await.map_err(|e| storage_error(&e))?;
            batches.extend(self.batches(&Array::of1(&record))?);
        }
        Ok(batches)
    }

    fn text<'a>(&self, batch: &'a Batch) -> Result<Cow<'a, str>> {
        match self.held.borrow_mut().remove(&batch.last_position) {
            Some(record) => get(&record, "events")
                .as_string()
                .map(Cow::Owned)
                .ok_or_else(|| {
                    Error::Storage(format!(
                        "corrupt record {}: events is not a string",
                        batch.last_position
                    ))
                }),
            None => Ok(Cow::Borrowed(&batch.events)),
        }
    }

    fn text_contains(&self, batch: &Batch, needle: &str) -> Result<bool> {
        // Looked for in JavaScript: the text is not copied into wasm.
        match self.held.borrow().get(&batch.last_position) {
            Some(record) => Ok(get(record, "events")
                .dyn_into::<js_sys::JsString>()
                .map(|t| t.includes(needle, 0))
                .unwrap_or(true)),
            // Not held: decode it and see.
            None => Ok(true),
        }
    }

    fn release(&self, batch: &Batch) {
        self.held.borrow_mut().remove(&batch.last_position);
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
        let store = self.current.borrow().1.clone();
        for key in keys {
            store
                .delete(&JsValue::from_f64(*key as f64))
                .map_err(|e| storage_error(&e))?;
        }
        Ok(())
    }

    fn add(&mut self, batches: &[Batch]) -> Result<()> {
        self.write_records(batches, false)
    }

    fn put(&mut self, batches: &[Batch]) -> Result<()> {
        self.write_records(batches, true)
    }

    async fn commit(mut self) -> Result<()> {
        let tx = self.current.borrow().0.clone();
        let done = self.done.take();
        super::request::commit_early(&tx);
        let Some(done) = done else {
            return Ok(());
        };
        match done.await {
            Ok(()) => Ok(()),
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
